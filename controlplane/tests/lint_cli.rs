//! `rvoip sip lint` as a user runs it: JSON lines, exit status, limits.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use std::process::Command;

fn rvoip() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rvoip"))
}

#[test]
fn json_lines_agree_with_the_rfc4475_manifest() {
    let dir = common::conformance_dir().join("rfc4475");
    let rows = common::manifest("rfc4475");
    let files: Vec<_> = rows.iter().map(|r| dir.join(&r["file"])).collect();
    let out = rvoip()
        .args(["sip", "lint", "--json"])
        .args(&files)
        .output()
        .expect("rvoip runs");
    assert_eq!(out.status.code(), Some(1), "some files are invalid");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), rows.len());
    for (row, line) in rows.iter().zip(&lines) {
        let obj = line.as_object().expect("object");
        let keys: Vec<_> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys, ["file", "reason", "status", "verdict"]);
        assert!(
            obj["file"]
                .as_str()
                .is_some_and(|f| f.ends_with(&row["file"]))
        );
        let verdict = obj["verdict"].as_str().unwrap_or_default();
        match row["verdict"].as_str() {
            "valid" => assert_eq!(
                (verdict, &obj["status"]),
                ("valid", &serde_json::Value::Null),
                "{}",
                row["name"]
            ),
            "valid-semantic-error" => assert_eq!(verdict, "valid", "{}", row["name"]),
            "invalid-must-reject" => assert_eq!(verdict, "invalid", "{}", row["name"]),
            _ => {}
        }
        assert!(obj["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
}

#[test]
fn rfc5118_archive_files_lint_as_the_manifest_says() {
    let dir = common::conformance_dir().join("rfc5118");
    let rows = common::manifest("rfc5118");
    let files: Vec<_> = rows.iter().map(|r| dir.join(&r["file"])).collect();
    let out = rvoip()
        .args(["sip", "lint", "--json"])
        .args(&files)
        .output()
        .expect("rvoip runs");
    assert_eq!(out.status.code(), Some(1));
    for (row, line) in rows
        .iter()
        .zip(String::from_utf8_lossy(&out.stdout).lines())
    {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let want = if row["verdict"] == "invalid-must-reject" {
            "invalid"
        } else {
            "valid"
        };
        assert_eq!(v["verdict"], want, "{}", row["name"]);
    }
}

#[test]
fn all_valid_files_exit_zero_and_text_output_is_readable() {
    let dir = common::conformance_dir().join("rfc4475");
    let out = rvoip()
        .args(["sip", "lint"])
        .arg(dir.join("wsinv.dat"))
        .arg(dir.join("zeromf.dat"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wsinv.dat: valid"), "{text}");
    assert!(text.contains("zeromf.dat: valid, answer 483"), "{text}");
}

#[test]
fn limits_reject_huge_lines_and_header_floods_with_a_clear_reason() {
    let tmp = std::env::temp_dir().join(format!("rvoip-lint-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let head = "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\nFrom: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: lim\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n";
    let long_line = format!(
        "{head}X-Long: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let flood = format!(
        "{head}{}Content-Length: 0\r\n\r\n",
        "X-H: v\r\n".repeat(10_000)
    );
    let hundred = format!(
        "{head}{}X-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "X-H: v\r\n".repeat(100),
        "b".repeat(4000)
    );
    let files = [
        ("long.sip", long_line),
        ("flood.sip", flood),
        ("hundred.sip", hundred),
    ];
    for (name, text) in &files {
        std::fs::write(tmp.join(name), text).expect("write");
    }
    let out = rvoip()
        .args(["sip", "lint", "--json", "--max-message-size", "4194304"])
        .args(files.iter().map(|(n, _)| tmp.join(n)))
        .output()
        .expect("runs");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["verdict"], "invalid");
    assert!(
        lines[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("header line length exceeds the limit of 8192")),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["verdict"], "invalid");
    assert!(
        lines[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("header count exceeds the limit of 256")),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2]["verdict"], "valid", "{}", lines[2]);
    // With default limits the 1 MiB file is also too big as a datagram.
    let out = rvoip()
        .args(["sip", "lint", "--json"])
        .arg(tmp.join("long.sip"))
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"invalid\""));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn unreadable_files_are_reported_and_exit_two() {
    let out = rvoip()
        .args(["sip", "lint", "--json", "/nonexistent/rvoip.sip"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot read file"));
}
