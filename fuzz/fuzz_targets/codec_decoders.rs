//! Every decoder on arbitrary payloads: G.711 µ/A-law, G.722, Opus, L16,
//! G.729A, AMR and AMR-WB in both RFC 4867 packings (the fuzz build turns
//! the `g729` and `amr` features on), comfort noise and telephone events. The first octet picks the codec;
//! the rest is cut into payloads by one-octet lengths. No payload may
//! panic, write past the frame it is given, or leave the decoder unable to
//! conceal the next frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_codecs::cng::{CnParams, ComfortNoise};
use rvoip_codecs::dtmf::TelephoneEvent;
use rvoip_codecs::{Codec, Decoder};

const CODECS: [Codec; 5] = [
    Codec::Pcmu,
    Codec::Pcma,
    Codec::G722,
    Codec::Opus,
    Codec::L16,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let codec = CODECS[usize::from(pick) % CODECS.len()];
    let rate = [8000, 16_000, 48_000][usize::from(pick >> 4) % 3];
    let Ok(mut dec) = Decoder::new(codec, codec.pcm_rate(rate, rate)) else {
        return;
    };
    dec.set_octet_align(pick & 0x40 != 0);
    let mut cn = ComfortNoise::new();
    let mut out = vec![0i16; 5760];
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        if let Ok(m) = dec.decode(payload, &mut out) {
            assert!(m <= out.len());
        }
        let frame = (dec.pcm_rate() / 50) as usize;
        let m = dec.conceal(Some(payload), &mut out[..frame]);
        assert!(m <= frame);
        let _ = TelephoneEvent::parse(payload);
        if CnParams::parse(payload).is_ok() {
            let _ = cn.update(payload);
            cn.fill(&mut out[..frame]);
        }
    }
});
