//! Master keys, the AES-CM key derivation function (RFC 3711 §4.3.1,
//! RFC 6188 §7, RFC 7714 §11) and the session keys it yields.
//!
//! Every type here that holds key material wipes it on drop: master keys and
//! salts through `zeroize`, the RustCrypto cipher and HMAC states through their
//! `zeroize` features, ring's AES-GCM key schedule through [`Wiped`].
#![allow(unsafe_code)]

use std::mem::ManuallyDrop;

use aes::cipher::{KeyInit, KeyIvInit, StreamCipher};
use ring::aead;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::Suite;

/// Longest master key (AES-256).
pub const MAX_KEY: usize = 32;
/// Master salt length of the AES-CM suites; the GCM suites use 12.
pub const MAX_SALT: usize = 14;

/// A master key and salt with the parameters SDES can attach to them
/// (RFC 4568 §6.1): lifetime, MKI, key derivation rate.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    key: [u8; MAX_KEY],
    salt: [u8; MAX_SALT],
    #[zeroize(skip)]
    key_len: u8,
    #[zeroize(skip)]
    salt_len: u8,
    /// Master key identifier carried in every packet, if any.
    #[zeroize(skip)]
    pub mki: Option<Mki>,
    /// Packets (SRTP and SRTCP together) this key may protect or verify.
    #[zeroize(skip)]
    pub lifetime: u64,
    /// Key derivation rate as a power of two (RFC 4568 `KDR=n`: rate 2^n);
    /// `None` derives the session keys once (RFC 3711 rate 0).
    #[zeroize(skip)]
    pub kdr_log2: Option<u8>,
}

impl std::fmt::Debug for MasterKey {
    // Keys are never logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("key_len", &self.key_len)
            .field("salt_len", &self.salt_len)
            .field("mki", &self.mki)
            .field("lifetime", &self.lifetime)
            .field("kdr_log2", &self.kdr_log2)
            .finish_non_exhaustive()
    }
}

/// A master key identifier: its value and its length on the wire (1-4 octets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mki {
    /// The value, right-aligned.
    pub value: u32,
    /// Octets on the wire.
    pub len: u8,
}

impl Mki {
    /// Writes the MKI into `out` (exactly `len` octets).
    pub(crate) fn write(&self, out: &mut [u8]) {
        let be = self.value.to_be_bytes();
        out.copy_from_slice(&be[4 - usize::from(self.len)..]);
    }
    /// Whether `wire` carries this MKI.
    pub(crate) fn matches(&self, wire: &[u8]) -> bool {
        let be = self.value.to_be_bytes();
        wire == &be[4 - usize::from(self.len)..]
    }
}

/// RFC 3711 §9.2: at most 2^48 SRTP packets per master key.
pub const DEFAULT_LIFETIME: u64 = 1 << 48;

impl MasterKey {
    /// A master key for `suite` from its key and salt octets, or `None` when
    /// their lengths do not fit the suite.
    pub fn new(suite: Suite, key: &[u8], salt: &[u8]) -> Option<Self> {
        if key.len() != suite.master_key_len() || salt.len() != suite.master_salt_len() {
            return None;
        }
        let mut m = MasterKey {
            key: [0; MAX_KEY],
            salt: [0; MAX_SALT],
            key_len: key.len() as u8,
            salt_len: salt.len() as u8,
            mki: None,
            lifetime: DEFAULT_LIFETIME,
            kdr_log2: None,
        };
        m.key[..key.len()].copy_from_slice(key);
        m.salt[..salt.len()].copy_from_slice(salt);
        Some(m)
    }

    /// From the concatenated key || salt of an SDES `inline:` parameter.
    pub fn from_concatenated(suite: Suite, key_salt: &[u8]) -> Option<Self> {
        let k = suite.master_key_len();
        if key_salt.len() != k + suite.master_salt_len() {
            return None;
        }
        Self::new(suite, &key_salt[..k], &key_salt[k..])
    }

    /// Same key, salt and parameters.
    pub(crate) fn same_as(&self, other: &MasterKey) -> bool {
        self.key() == other.key()
            && self.salt() == other.salt()
            && self.mki == other.mki
            && self.lifetime == other.lifetime
            && self.kdr_log2 == other.kdr_log2
    }

    /// The master key octets.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key[..usize::from(self.key_len)]
    }

    /// The master salt octets.
    pub(crate) fn salt(&self) -> &[u8] {
        &self.salt[..usize::from(self.salt_len)]
    }

    /// Writes key || salt (the SDES `inline:` octets) into `out`; returns the length.
    pub fn concatenated(&self, out: &mut [u8; MAX_KEY + MAX_SALT]) -> usize {
        let (k, s) = (self.key(), self.salt());
        out[..k.len()].copy_from_slice(k);
        out[k.len()..k.len() + s.len()].copy_from_slice(s);
        k.len() + s.len()
    }

    /// The session key epoch of packet `index` (RFC 3711 §4.3.1: r = index DIV kdr).
    pub(crate) fn epoch(&self, index: u64) -> u64 {
        match self.kdr_log2 {
            Some(n) => index >> n,
            None => 0,
        }
    }
}

/// Key derivation labels (RFC 3711 §4.3.2).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Labels {
    Rtp,
    Rtcp,
}

impl Labels {
    /// (encryption, authentication, salt) labels.
    fn values(self) -> (u8, u8, u8) {
        match self {
            Labels::Rtp => (0x00, 0x01, 0x02),
            Labels::Rtcp => (0x03, 0x04, 0x05),
        }
    }
}

type Ctr128<C> = ctr::Ctr128BE<C>;

/// The AES-CM pseudo-random function: keystream for IV = (key_id XOR salt) * 2^16,
/// key_id = label || r (RFC 3711 §4.3.1). A 12-octet GCM master salt is
/// right-padded with zeros to 14 (RFC 7714 §11).
pub(crate) fn prf(master: &MasterKey, label: u8, r: u64, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..master.salt().len()].copy_from_slice(master.salt());
    iv[7] ^= label;
    let r = r.to_be_bytes();
    for (i, b) in r[2..].iter().enumerate() {
        iv[8 + i] ^= b;
    }
    out.fill(0);
    let key = master.key();
    match key.len() {
        16 => {
            if let Ok(mut c) = Ctr128::<aes::Aes128>::new_from_slices(key, &iv) {
                c.apply_keystream(out);
            }
        }
        _ => {
            if let Ok(mut c) = Ctr128::<aes::Aes256>::new_from_slices(key, &iv) {
                c.apply_keystream(out);
            }
        }
    }
    iv.zeroize();
}

/// A value whose memory is overwritten with zeros when dropped. For key
/// schedules of libraries that do not wipe their own (ring's `LessSafeKey`):
/// such types own no heap memory (checked at compile time), so every secret
/// octet lives inside the value itself.
pub(crate) struct Wiped<T>(ManuallyDrop<T>);

impl<T> Wiped<T> {
    const OWNS_NOTHING_ELSE: () = assert!(!std::mem::needs_drop::<T>());

    pub(crate) fn new(value: T) -> Self {
        let () = Self::OWNS_NOTHING_ELSE;
        Wiped(ManuallyDrop::new(value))
    }
}

impl<T> std::ops::Deref for Wiped<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Drop for Wiped<T> {
    fn drop(&mut self) {
        // SAFETY: `T` needs no drop (asserted in `new`), so skipping its drop
        // leaks nothing; the value is never read again after being zeroed, and
        // `zeroize_flat_type` writes exactly size_of::<T>() octets in place.
        unsafe { zeroize::zeroize_flat_type(&mut *self.0 as *mut T) };
    }
}

/// HMAC-SHA1 (RFC 2104) with a 160-bit SRTP session authentication key,
/// keyed once: the SHA-1 states after the key XOR ipad and key XOR opad
/// blocks. Per packet that leaves the message blocks, one padding block and
/// one outer block, on the `sha1` crate's compression function (SHA-NI when
/// the CPU has it), with no state to copy or buffer: the general-purpose
/// `hmac` wrapper measured about 40 ns more per packet here.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct HmacSha1 {
    inner: [u32; 5],
    outer: [u32; 5],
}

/// SHA-1 initial state (FIPS 180-4 §5.3.1).
const SHA1_H0: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];

impl HmacSha1 {
    pub(crate) fn new(key: &[u8; 20]) -> Self {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, k) in key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let mut inner = SHA1_H0;
        let mut outer = SHA1_H0;
        sha1::block_api::compress(&mut inner, &[ipad]);
        sha1::block_api::compress(&mut outer, &[opad]);
        ipad.zeroize();
        opad.zeroize();
        HmacSha1 { inner, outer }
    }

    /// HMAC of `data || tail`, `tail` at most 8 octets (the ROC).
    pub(crate) fn mac(&self, data: &[u8], tail: &[u8]) -> [u8; 20] {
        let mut st = self.inner;
        let (full, rest) = data.as_chunks::<64>();
        sha1::block_api::compress(&mut st, full);
        // The rest, the tail, 0x80, zeros, and the bit length of everything
        // hashed (the ipad block included): one or two blocks.
        let mut last = [[0u8; 64]; 2];
        let flat = last.as_flattened_mut();
        let r = rest.len();
        let t = tail.len().min(8);
        flat[..r].copy_from_slice(rest);
        flat[r..r + t].copy_from_slice(&tail[..t]);
        flat[r + t] = 0x80;
        let blocks = if r + t + 9 <= 64 { 1 } else { 2 };
        let bits = ((64 + data.len() + t) as u64) * 8;
        flat[blocks * 64 - 8..blocks * 64].copy_from_slice(&bits.to_be_bytes());
        sha1::block_api::compress(&mut st, &last[..blocks]);
        let mut outer_block = [0u8; 64];
        for (i, w) in st.iter().enumerate() {
            outer_block[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
        outer_block[20] = 0x80;
        outer_block[56..].copy_from_slice(&((64u64 + 20) * 8).to_be_bytes());
        let mut o = self.outer;
        sha1::block_api::compress(&mut o, &[outer_block]);
        let mut out = [0u8; 20];
        for (i, w) in o.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// The cipher of one direction of SRTP or SRTCP. Kept inline (a box would
/// cost a pointer chase per packet); whole contexts are boxed instead.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Cipher {
    /// AES-128 in counter mode.
    Cm128(aes::Aes128Enc),
    /// AES-256 in counter mode.
    Cm256(aes::Aes256Enc),
    /// AES-GCM (ring).
    Gcm(Wiped<aead::LessSafeKey>),
    /// AES-128 in f8 mode: the session key, and the session key XOR the
    /// salt-derived mask m that encrypts the IV (RFC 3711 §4.1.2.1).
    F8 {
        key: aes::Aes128Enc,
        masked: aes::Aes128Enc,
    },
}

/// Session keys of SRTP or SRTCP for one master key and epoch.
pub(crate) struct SessionKeys {
    pub(crate) cipher: Cipher,
    /// HMAC-SHA1 keyed with the session authentication key (AES-CM suites).
    pub(crate) auth: Option<HmacSha1>,
    /// Session salt: 14 octets for AES-CM, the first 12 for GCM.
    pub(crate) salt: [u8; MAX_SALT],
    /// The epoch (index DIV kdr) these keys belong to.
    pub(crate) epoch: u64,
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

impl SessionKeys {
    /// Derives the session keys of `labels` for `epoch`. No allocation.
    /// `None` only if the master key does not fit the suite.
    pub(crate) fn derive(
        suite: Suite,
        master: &MasterKey,
        labels: Labels,
        epoch: u64,
    ) -> Option<Self> {
        if master.key().len() != suite.master_key_len() {
            return None;
        }
        let (l_enc, l_auth, l_salt) = labels.values();
        let mut enc = [0u8; MAX_KEY];
        let enc = &mut enc[..suite.session_key_len()];
        prf(master, l_enc, epoch, enc);
        let mut salt = [0u8; MAX_SALT];
        prf(master, l_salt, epoch, &mut salt[..suite.session_salt_len()]);
        let cipher = match suite {
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => {
                let alg = if suite == Suite::AeadAes128Gcm {
                    &aead::AES_128_GCM
                } else {
                    &aead::AES_256_GCM
                };
                let k = aead::UnboundKey::new(alg, enc).ok()?;
                Cipher::Gcm(Wiped::new(aead::LessSafeKey::new(k)))
            }
            Suite::F8128HmacSha1_80 => {
                // m = k_s || 0x55... to the key's length.
                let mut masked = [0x55u8; 16];
                masked[..MAX_SALT].copy_from_slice(&salt);
                for (m, k) in masked.iter_mut().zip(enc.iter()) {
                    *m ^= k;
                }
                let c = Cipher::F8 {
                    key: aes::Aes128Enc::new_from_slice(enc).ok()?,
                    masked: aes::Aes128Enc::new_from_slice(&masked).ok()?,
                };
                masked.zeroize();
                c
            }
            _ => match enc.len() {
                16 => Cipher::Cm128(aes::Aes128Enc::new_from_slice(enc).ok()?),
                _ => Cipher::Cm256(aes::Aes256Enc::new_from_slice(enc).ok()?),
            },
        };
        let auth = if suite.is_gcm() {
            Some(None)
        } else {
            let mut a = [0u8; 20];
            prf(master, l_auth, epoch, &mut a);
            let mac = HmacSha1::new(&a);
            a.zeroize();
            Some(Some(mac))
        };
        enc.zeroize();
        Some(SessionKeys {
            cipher,
            auth: auth?,
            salt,
            epoch,
        })
    }
}

/// XORs the AES-CM keystream for `iv` over `data` (RFC 3711 §4.1.1).
pub(crate) fn aes_cm(cipher: &Cipher, iv: &[u8; 16], data: &mut [u8]) {
    use aes::cipher::InnerIvInit;
    match cipher {
        Cipher::Cm128(aes) => {
            let mut c = Ctr128::<aes::Aes128Enc>::from_core(ctr::CtrCore::inner_iv_init(
                aes.clone(),
                &(*iv).into(),
            ));
            c.apply_keystream(data);
        }
        Cipher::Cm256(aes) => {
            let mut c = Ctr128::<aes::Aes256Enc>::from_core(ctr::CtrCore::inner_iv_init(
                aes.clone(),
                &(*iv).into(),
            ));
            c.apply_keystream(data);
        }
        Cipher::Gcm(_) | Cipher::F8 { .. } => {}
    }
}

/// XORs the AES-f8 keystream for `iv` over `data` (RFC 3711 §4.1.2):
/// IV' = E(k_e XOR m, IV); S(j) = E(k_e, IV' XOR j XOR S(j-1)), S(-1) = 0.
pub(crate) fn aes_f8(cipher: &Cipher, iv: &[u8; 16], data: &mut [u8]) {
    use aes::cipher::BlockCipherEncrypt;
    let Cipher::F8 { key, masked } = cipher else {
        return;
    };
    let mut iv_prime = aes::Block::from(*iv);
    masked.encrypt_block(&mut iv_prime);
    let mut s = [0u8; 16];
    for (j, chunk) in data.chunks_mut(16).enumerate() {
        let mut block = aes::Block::default();
        let jb = (j as u128).to_be_bytes();
        for i in 0..16 {
            block[i] = iv_prime[i] ^ jb[i] ^ s[i];
        }
        key.encrypt_block(&mut block);
        s.copy_from_slice(&block);
        for (d, k) in chunk.iter_mut().zip(s.iter()) {
            *d ^= k;
        }
    }
    s.zeroize();
}
