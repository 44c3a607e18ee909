//! The media server of `config/mediaserver.toml` between real SIPp peers,
//! judged on what the held party's media port receives (a packet capture
//! on loopback): a caller holds the call with a re-INVITE `a=sendonly`
//! for 3 s, then takes it off hold; neither SIPp sends audio, so every
//! packet the called party gets is rvoip's music on hold — about 3 s of
//! it, audible, and nothing before or after.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::capture::Capture;
use common::sipp::{scenario, sipp, uas};
use common::{Spawned, free_udp_port, test_config, test_dir};

#[test]
fn a_held_party_hears_music_on_hold_and_only_while_held() {
    let dir = test_dir("moh");
    let (access, core, uas_media, uac_media) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompts");
    let mut ports = common::sbc_ports(access, free_udp_port(), core, 53100);
    ports.extend([
        (
            "prompt_dir = \"../prompts\"",
            format!("prompt_dir = \"{}\"", prompts.display()),
        ),
        (
            "dir = \"../recordings\"",
            format!("dir = \"{}\"", dir.join("recordings").display()),
        ),
    ]);
    let config = test_config("mediaserver.toml", &dir, &ports);
    let log = dir.join("rvoip.log");
    let _app = Spawned::spawn(
        Command::new(env!("CARGO_BIN_EXE_rvoip"))
            .args(["run", "--config"])
            .arg(&config)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    common::wait_options_ok(access, || std::fs::read_to_string(&log).unwrap_or_default());
    let _uas = uas(
        &dir,
        core,
        &["-sf", scenario("hold_uas.xml").to_str().unwrap()],
        &["-mi", "127.0.0.1", "-mp", &uas_media.to_string(), "-m", "1"],
    );
    let cap = Capture::start();
    let stats = sipp(
        &dir,
        "hold",
        &[
            &format!("127.0.0.1:{access}"),
            "-sf",
            scenario("hold_uac.xml").to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-p",
            &free_udp_port().to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &uac_media.to_string(),
            "-m",
            "1",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(
        stats.successful,
        1,
        "{stats:?}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(300));
    let to = |port: u16| {
        cap.all()
            .into_iter()
            .filter(|d| (53100..=53199).contains(&d.src.port()) && d.dst.port() == port)
            .collect::<Vec<_>>()
    };
    let held = to(uas_media);
    // 3 s on hold at 50 packets a second, give or take the signalling.
    assert!(
        (120..=190).contains(&held.len()),
        "the held party got {} packets of music, for about 3 s of hold",
        held.len()
    );
    let mut pcm = Vec::new();
    for d in &held {
        let payload = d.head.get(12..).unwrap_or_default();
        let mut out = vec![0i16; payload.len()];
        rvoip_codecs::g711::decode_ulaw(payload, &mut out);
        pcm.extend_from_slice(&out);
    }
    let level = rvoip_codecs::tone::level_dbov(&pcm);
    assert!(level > -40.0, "the music is audible: {level} dBov");
    assert!(
        to(uac_media).is_empty(),
        "the holder hears nothing: nobody sends it audio"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
