//! rvoip's XDP program, written here as eBPF instructions: it steers UDP
//! to rvoip's addresses and ports into the AF_XDP socket of the receiving
//! queue and passes everything else to the kernel.
//!
//! What it does with a frame at the driver (no compiler at build or run
//! time: [`steering`] assembles it from the listing below, the kernel's
//! verifier checks it at load):
//!
//! 1. Ethernet II with EtherType IPv4 or IPv6, else pass.
//! 2. IPv4 without options (IHL 5), not a fragment (MF and offset 0),
//!    protocol UDP; IPv6 whose next header is UDP (extension headers and
//!    fragments pass). Anything shorter than its headers passes.
//! 3. Key (family, destination port, destination address) looked up in
//!    the `ports` hash map rvoip fills with the addresses it serves; a hit
//!    is redirected into the `xsks` map at the frame's receive queue, with
//!    `XDP_PASS` as the action when that queue has no socket (so a stale
//!    program whose sockets closed passes everything to the kernel).
//!
//! The key's layout is [`PortKey`]; the listing uses its offsets.

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register (low nibble), source register (high nibble).
    pub regs: u8,
    /// Offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

impl Insn {
    /// The 8 octets the kernel reads.
    pub fn encode(&self) -> [u8; 8] {
        let o = self.off.to_le_bytes();
        let i = self.imm.to_le_bytes();
        [self.code, self.regs, o[0], o[1], i[0], i[1], i[2], i[3]]
    }
}

/// `XDP_PASS`.
pub const XDP_PASS: i32 = 2;
/// `BPF_PSEUDO_MAP_FD`: the immediate of a 64-bit load is a map's fd.
const PSEUDO_MAP_FD: u8 = 1;
/// Helpers called.
const MAP_LOOKUP_ELEM: i32 = 1;
const REDIRECT_MAP: i32 = 51;

/// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const FP: u8 = 10;

/// Sizes of loads and stores.
#[derive(Clone, Copy)]
enum Size {
    B = 0x10,
    H = 0x08,
    W = 0x00,
    Dw = 0x18,
}

/// Where a jump goes: a label resolved once the listing is complete.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Ipv4,
    Ipv6,
    Lookup,
    Pass,
}

/// A listing being written: instructions, and jumps still to resolve.
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<(Label, usize)>,
    jumps: Vec<(usize, Label)>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        });
    }
    /// `dst = src` (64-bit).
    fn mov(&mut self, dst: u8, src: u8) {
        self.op(0xbf, dst, src, 0, 0);
    }
    /// `dst = imm` (64-bit).
    fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.op(0xb7, dst, 0, 0, imm);
    }
    /// `dst += imm`.
    fn add_imm(&mut self, dst: u8, imm: i32) {
        self.op(0x07, dst, 0, 0, imm);
    }
    /// `dst &= imm`.
    fn and_imm(&mut self, dst: u8, imm: i32) {
        self.op(0x57, dst, 0, 0, imm);
    }
    /// `dst = *(size *)(src + off)`.
    fn load(&mut self, size: Size, dst: u8, src: u8, off: i16) {
        self.op(0x61 | size as u8, dst, src, off, 0);
    }
    /// `*(size *)(dst + off) = src`.
    fn store(&mut self, size: Size, dst: u8, off: i16, src: u8) {
        self.op(0x63 | size as u8, dst, src, off, 0);
    }
    /// `*(size *)(dst + off) = imm`.
    fn store_imm(&mut self, size: Size, dst: u8, off: i16, imm: i32) {
        self.op(0x62 | size as u8, dst, 0, off, imm);
    }
    /// `dst = map` (a 64-bit load of the map's fd, two slots).
    fn load_map(&mut self, dst: u8, fd: i32) {
        self.op(0x18, dst, PSEUDO_MAP_FD, 0, fd);
        self.op(0, 0, 0, 0, 0);
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.jumps.push((self.insns.len(), to));
        self.op(code, dst, src, 0, imm);
    }
    /// `goto to`.
    fn ja(&mut self, to: Label) {
        self.jump(0x05, 0, 0, 0, to);
    }
    /// `if dst == imm goto to`.
    fn jeq_imm(&mut self, dst: u8, imm: i32, to: Label) {
        self.jump(0x15, dst, 0, imm, to);
    }
    /// `if dst != imm goto to`.
    fn jne_imm(&mut self, dst: u8, imm: i32, to: Label) {
        self.jump(0x55, dst, 0, imm, to);
    }
    /// `if dst > src goto to` (unsigned).
    fn jgt(&mut self, dst: u8, src: u8, to: Label) {
        self.jump(0x2d, dst, src, 0, to);
    }
    fn call(&mut self, helper: i32) {
        self.op(0x85, 0, 0, 0, helper);
    }
    fn exit(&mut self) {
        self.op(0x95, 0, 0, 0, 0);
    }
    fn label(&mut self, l: Label) {
        self.labels.push((l, self.insns.len()));
    }
    /// The listing with its jumps resolved.
    fn finish(mut self) -> Vec<Insn> {
        for (at, to) in std::mem::take(&mut self.jumps) {
            let target = self
                .labels
                .iter()
                .find(|(l, _)| *l == to)
                .map_or(at + 1, |(_, t)| *t);
            // Relative to the next instruction.
            self.insns[at].off = (target as i64 - at as i64 - 1) as i16;
        }
        self.insns
    }
}

/// The key of the `ports` map: what a frame is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct PortKey {
    /// 4 or 6.
    pub family: u8,
    /// Zero.
    pub pad: u8,
    /// UDP destination port, network order.
    pub port_be: [u8; 2],
    /// IPv4 address in the first 4 octets (the rest zero), or the IPv6
    /// address.
    pub addr: [u8; 16],
}

impl PortKey {
    /// The key of UDP to `addr`.
    pub fn of(addr: std::net::SocketAddr) -> PortKey {
        let mut k = PortKey {
            port_be: addr.port().to_be_bytes(),
            ..PortKey::default()
        };
        match addr.ip() {
            std::net::IpAddr::V4(a) => {
                k.family = 4;
                k.addr[..4].copy_from_slice(&a.octets());
            }
            std::net::IpAddr::V6(a) => {
                k.family = 6;
                k.addr = a.octets();
            }
        }
        k
    }

    /// Its 20 octets, as the map holds them.
    pub fn bytes(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[0] = self.family;
        b[1] = self.pad;
        b[2..4].copy_from_slice(&self.port_be);
        b[4..].copy_from_slice(&self.addr);
        b
    }
}

/// Offset of the key on the program's stack.
const KEY: i16 = -24;

/// The steering program, its maps given by file descriptor.
pub fn steering(ports_fd: i32, xsks_fd: i32) -> Vec<Insn> {
    use Label::*;
    use Size::*;
    let mut a = Asm {
        insns: Vec::with_capacity(64),
        labels: Vec::new(),
        jumps: Vec::new(),
    };
    // r6 = ctx; r2 = data; r3 = data_end (struct xdp_md).
    a.mov(R6, R1);
    a.load(W, R2, R6, 0);
    a.load(W, R3, R6, 4);
    // Ethernet header in the frame, EtherType IPv4 or IPv6 (loaded
    // little-endian: 0x0800 reads 0x0008).
    a.mov(R4, R2);
    a.add_imm(R4, 14);
    a.jgt(R4, R3, Pass);
    a.load(H, R5, R2, 12);
    // The key, zeroed: family, pad, port, address.
    a.store_imm(Dw, FP, KEY, 0);
    a.store_imm(Dw, FP, KEY + 8, 0);
    a.store_imm(W, FP, KEY + 16, 0);
    a.jeq_imm(R5, 0x0008, Ipv4);
    a.jeq_imm(R5, 0xdd86, Ipv6);
    a.ja(Pass);

    // IPv4 (20 octets, no options) and UDP in the frame.
    a.label(Ipv4);
    a.mov(R4, R2);
    a.add_imm(R4, 14 + 20 + 8);
    a.jgt(R4, R3, Pass);
    a.load(B, R5, R2, 14);
    a.jne_imm(R5, 0x45, Pass);
    // Flags and fragment offset: MF or an offset is a fragment.
    a.load(H, R5, R2, 14 + 6);
    a.and_imm(R5, 0xff3f);
    a.jne_imm(R5, 0, Pass);
    a.load(B, R5, R2, 14 + 9);
    a.jne_imm(R5, 17, Pass);
    a.store_imm(B, FP, KEY, 4);
    a.load(H, R5, R2, 14 + 20 + 2);
    a.store(H, FP, KEY + 2, R5);
    a.load(W, R5, R2, 14 + 16);
    a.store(W, FP, KEY + 4, R5);
    a.ja(Lookup);

    // IPv6 (40 octets, next header UDP) and UDP in the frame.
    a.label(Ipv6);
    a.mov(R4, R2);
    a.add_imm(R4, 14 + 40 + 8);
    a.jgt(R4, R3, Pass);
    a.load(B, R5, R2, 14 + 6);
    a.jne_imm(R5, 17, Pass);
    a.store_imm(B, FP, KEY, 6);
    a.load(H, R5, R2, 14 + 40 + 2);
    a.store(H, FP, KEY + 2, R5);
    for i in 0..4i16 {
        a.load(W, R5, R2, 14 + 24 + 4 * i);
        a.store(W, FP, KEY + 4 + 4 * i, R5);
    }

    // Served by rvoip: into the socket of the receiving queue.
    a.label(Lookup);
    a.load_map(R1, ports_fd);
    a.mov(R2, FP);
    a.add_imm(R2, i32::from(KEY));
    a.call(MAP_LOOKUP_ELEM);
    a.jeq_imm(R0, 0, Pass);
    a.load_map(R1, xsks_fd);
    a.load(W, R2, R6, 16);
    a.mov_imm(R3, XDP_PASS);
    a.call(REDIRECT_MAP);
    a.exit();

    a.label(Pass);
    a.mov_imm(R0, XDP_PASS);
    a.exit();
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program_and_it_ends_in_exit() {
        let p = steering(3, 4);
        assert!(p.len() < 100);
        for (i, insn) in p.iter().enumerate() {
            let class = insn.code & 0x07;
            if class == 0x05 && insn.code != 0x85 && insn.code != 0x95 {
                let to = i as i64 + 1 + i64::from(insn.off);
                assert!((0..p.len() as i64).contains(&to), "jump at {i}");
                assert_ne!(insn.off, 0, "an unresolved jump at {i}");
            }
        }
        assert_eq!(p.last().map(|i| i.code), Some(0x95));
        // The map fds are in the 64-bit loads.
        let maps: Vec<i32> = p.iter().filter(|i| i.code == 0x18).map(|i| i.imm).collect();
        assert_eq!(maps, [3, 4]);
    }

    #[test]
    fn instructions_encode_little_endian() {
        let i = Insn {
            code: 0x61,
            regs: 0x62,
            off: -2,
            imm: 0x0102_0304,
        };
        assert_eq!(i.encode(), [0x61, 0x62, 0xfe, 0xff, 4, 3, 2, 1]);
    }

    #[test]
    fn keys_hold_family_port_and_address() {
        let k = PortKey::of("10.99.0.1:5060".parse().unwrap());
        let b = k.bytes();
        assert_eq!(&b[..8], &[4, 0, 0x13, 0xc4, 10, 99, 0, 1]);
        assert!(b[8..].iter().all(|x| *x == 0));
        let k = PortKey::of("[fd00::1]:2223".parse().unwrap());
        assert_eq!(k.bytes()[0], 6);
        assert_eq!(k.bytes()[19], 1);
    }
}
