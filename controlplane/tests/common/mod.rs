//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::PathBuf;

/// `../shared/conformance` beside the repository, or `RVOIP_CONFORMANCE_DIR`.
/// Missing data fails the test: conformance is never skipped silently.
pub fn conformance_dir() -> PathBuf {
    let dir = std::env::var_os("RVOIP_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
        });
    assert!(
        dir.join("rfc4475/manifest.tsv").is_file(),
        "conformance data not found at {}",
        dir.display()
    );
    dir
}

/// One manifest row, by column name.
pub type Row = HashMap<String, String>;

/// Reads a manifest.tsv.
pub fn manifest(set: &str) -> Vec<Row> {
    let text = std::fs::read_to_string(conformance_dir().join(set).join("manifest.tsv"))
        .expect("manifest readable");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header row").split('\t').collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split('\t').map(str::to_string))
                .collect()
        })
        .collect()
}

/// The bytes of a conformance file.
pub fn read(set: &str, file: &str) -> Vec<u8> {
    std::fs::read(conformance_dir().join(set).join(file)).expect("conformance file readable")
}

/// The wire form of an RFC 5118 archive message, by the one transformation the
/// conformance README documents: LF to CRLF, a closing empty line where it is
/// missing, and Content-Length set to the CRLF body length.
pub fn rfc5118_wire(raw: &[u8]) -> Vec<u8> {
    assert!(
        !raw.contains(&b'\r'),
        "RFC 5118 archive files have bare LF line ends"
    );
    let text = String::from_utf8(raw.to_vec()).expect("RFC 5118 files are text");
    let (head, body) = match text.split_once("\n\n") {
        Some((h, b)) => (h.to_string(), b.to_string()),
        None => (text.trim_end_matches('\n').to_string(), String::new()),
    };
    let body = body.replace('\n', "\r\n");
    let head: Vec<String> = head
        .split('\n')
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") && !body.is_empty() {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_string()
            }
        })
        .collect();
    format!("{}\r\n\r\n{}", head.join("\r\n"), body).into_bytes()
}
