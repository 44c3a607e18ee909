//! Each role's `--help` lists what applies to it.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::process::Command;

fn help(role: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
        .args([role, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn register_help_shows_only_what_a_registration_storm_uses() {
    let h = help("register");
    for wanted in [
        "--target",
        "--rate",
        "--calls",
        "--duration",
        "--user",
        "--password",
        "--domain",
        "--expires",
        "--json",
        "--plot",
        "--max-fail-pct",
    ] {
        assert!(h.contains(wanted), "{wanted} missing:\n{h}");
    }
    for unwanted in ["--hold", "--media", "--srtp", "--service"] {
        assert!(
            !h.contains(unwanted),
            "{unwanted} does not apply to register:\n{h}"
        );
    }
    // The roles that carry calls keep them.
    let uac = help("uac");
    for wanted in ["--hold", "--media", "--srtp", "--service", "--rate"] {
        assert!(uac.contains(wanted), "{wanted} missing from uac:\n{uac}");
    }
}
