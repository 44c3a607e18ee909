//! HEP capture of `config/sbc.toml` judged by independent tools: sngrep
//! listens for HEP as a Homer collector would and writes what it decoded
//! into a pcap, and tshark reads that back. Every SIP message of two SIPp
//! calls, on both legs and both ways, must be there with its addresses and
//! ports, and each call's quality report.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::sipp::{sipp, uas};
use common::{Spawned, appliance, free_udp_port, test_config, test_dir};

#[test]
fn sngrep_receives_every_sip_message_of_both_legs_and_the_call_reports_over_hep() {
    let dir = test_dir("ops-hep");
    let (access, inner, core, hep) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let mut ports = common::sbc_ports(access, inner, core, 27000);
    ports.push(("127.0.0.1:9060", format!("127.0.0.1:{hep}")));
    let config = test_config("sbc.toml", &dir, &ports);
    // sngrep as the HEP collector, writing what it decodes to a pcap.
    let pcap = dir.join("hep.pcap");
    let mut collector = Spawned::spawn(
        Command::new("sngrep")
            .args(["-N", "-q", "-L", &format!("udp:127.0.0.1:{hep}"), "-O"])
            .arg(&pcap)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sngrep.log")).unwrap()),
    );
    common::wait_udp_bound(hep);
    let mut sbc = appliance(&dir, &config, access);
    let uas_dir = dir.join("uas");
    std::fs::create_dir_all(&uas_dir).unwrap();
    let _uas = uas(&uas_dir, core, &["-sn", "uas"], &[]);
    let caller = free_udp_port();
    let s = sipp(
        &dir,
        "uac",
        &[
            "-sn",
            "uac",
            "-i",
            "127.0.0.2",
            "-p",
            &caller.to_string(),
            &format!("127.0.0.1:{access}"),
            "-m",
            "2",
            "-r",
            "10",
        ],
        Duration::from_secs(30),
    );
    assert_eq!((s.successful, s.failed), (2, 0), "{s:?}");
    let cdrs = common::wait_cdrs(&dir, 2, Duration::from_secs(10), || {
        std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default()
    });
    // Everything sent; then the collector is stopped so its file is whole.
    std::thread::sleep(Duration::from_millis(500));
    sbc.terminate();
    assert!(collector.terminate().is_some(), "sngrep did not stop");
    let (core_sip, inner_sip) = (
        format!("udp.port=={core},sip"),
        format!("udp.port=={inner},sip"),
    );
    let (text, rows) = common::tshark_fields(
        &pcap,
        &["-d", &core_sip, "-d", &inner_sip],
        &[
            "ip.src",
            "udp.srcport",
            "ip.dst",
            "udp.dstport",
            "sip.Method",
            "sip.Status-Code",
            "sip.Call-ID",
            "udp.payload",
        ],
    );
    for c in &cdrs {
        let (a, b) = (
            c["a_call_id"].as_str().unwrap(),
            c["b_call_id"].as_str().unwrap(),
        );
        let leg = |call_id: &str| -> Vec<String> {
            rows.iter()
                .filter(|r| r[6] == call_id)
                .map(|r| format!("{}:{}>{}:{} {}{}", r[0], r[1], r[2], r[3], r[4], r[5]))
                .collect()
        };
        let (ca, sa, co, si) = (
            format!("127.0.0.2:{caller}"),
            format!("127.0.0.1:{access}"),
            format!("127.0.0.1:{core}"),
            format!("127.0.0.1:{inner}"),
        );
        // The caller's leg, both ways, in the order they passed.
        assert_eq!(
            leg(a),
            [
                format!("{ca}>{sa} INVITE"),
                format!("{sa}>{ca} 180"),
                format!("{sa}>{ca} 200"),
                format!("{ca}>{sa} ACK"),
                format!("{ca}>{sa} BYE"),
                format!("{sa}>{ca} 200"),
            ],
            "{text}"
        );
        // The core's leg (its 200s may pass the caller's ACK in time).
        let mut core_leg = leg(b);
        let mut want = vec![
            format!("{si}>{co} INVITE"),
            format!("{co}>{si} 180"),
            format!("{co}>{si} 200"),
            format!("{si}>{co} ACK"),
            format!("{si}>{co} BYE"),
            format!("{co}>{si} 200"),
        ];
        core_leg.sort();
        want.sort();
        assert_eq!(core_leg, want, "{text}");
        // The call's quality report, correlated by the caller's Call-ID.
        let report = rows
            .iter()
            .filter_map(|r| r.get(7))
            .filter_map(|hex| {
                let bytes: Vec<u8> = (0..hex.len() / 2)
                    .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect();
                serde_json::from_slice::<serde_json::Value>(&bytes).ok()
            })
            .find(|v| v["call_id"] == a)
            .unwrap_or_else(|| panic!("no quality report for {a}: {text}"));
        assert_eq!(report["type"], "call-end", "{report}");
        assert_eq!(report["b_call_id"], b, "{report}");
        assert_eq!(report["end_reason"], "bye-caller", "{report}");
    }
}
