//! `rvoip config-check` checks every file a configuration names and what
//! only this host can tell, the same way every start does: a file that
//! passes does not stop the appliance (or crash-loop its control plane)
//! later.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{test_config, test_dir};

fn rvoip(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(args)
        .arg(config)
        // Relative paths are the config file's, not the working directory's.
        .current_dir("/")
        .output()
        .expect("runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_typo_in_the_users_file_fails_the_check_and_the_start() {
    let dir = test_dir("cc-users");
    let cfg = test_config("proxy.toml", &dir, &[]);
    let ok = rvoip(&["config-check"], &cfg);
    assert!(ok.status.success(), "{}", stderr(&ok));
    std::fs::write(
        dir.join("users.toml"),
        "[[user]]\nname = \"alice\"\npasword = \"alicepw\"\n",
    )
    .unwrap();
    for args in [&["config-check"][..], &["run", "--config"][..]] {
        let out = rvoip(args, &cfg);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("users.toml") && err.contains("pasword"),
            "{args:?}: {err}"
        );
    }
    std::fs::remove_file(dir.join("users.toml")).unwrap();
    let out = rvoip(&["config-check"], &cfg);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("registrar.users_file"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_media_address_not_on_this_host_is_an_error() {
    let dir = test_dir("cc-media");
    let cfg = test_config(
        "rvoip.toml",
        &dir,
        &[("address = \"127.0.0.1\"", "address = \"192.0.2.55\"".into())],
    );
    let out = rvoip(&["config-check"], &cfg);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("media.address") && err.contains("192.0.2.55 is not an address of this host"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cdr_file_is_relative_to_the_configuration_like_every_path() {
    let dir = test_dir("cc-cdr");
    let cfg = test_config(
        "sbc.toml",
        &dir,
        &[(
            "cdr_file = \"cdr.jsonl\"",
            "cdr_file = \"cdrs/cdr.jsonl\"".into(),
        )],
    );
    let out = rvoip(&["config-check"], &cfg);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "sbc.cdr_file: {}",
            dir.join("cdrs/cdr.jsonl").display()
        )),
        "{}",
        stderr(&out)
    );
    std::fs::create_dir(dir.join("cdrs")).unwrap();
    let out = rvoip(&["config-check"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    // The shipped file named bare, from its own directory.
    let shipped = test_config("sbc.toml", &dir, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(["config-check", "sbc.toml"])
        .current_dir(shipped.parent().unwrap())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
