//! The dialog journal's reader: whatever a crash, a full disk or another
//! program left in the file, opening it returns the records that check out
//! and a journal that works, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvoip_controlplane::sbc::journal::Journal;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("rvoip-fuzz-journal-{}", std::process::id()));
    let path = dir.join("dialogs.journal");
    let _ = std::fs::create_dir_all(&dir);
    // Half the inputs as a slotted journal (magic and slot size in front),
    // half as whatever the bytes are (the JSON-lines reader).
    let mut file = Vec::with_capacity(data.len() + 64);
    if data.first().is_some_and(|b| b & 1 == 0) {
        file.extend_from_slice(b"RVJRNL01");
        file.extend_from_slice(&256u32.to_le_bytes());
        file.resize(64, 0);
    }
    file.extend_from_slice(data);
    if std::fs::write(&path, &file).is_err() {
        return;
    }
    let Ok((mut j, live)) = Journal::open::<serde_json::Value>(&path) else {
        return;
    };
    let n = live.len();
    j.put(u64::MAX, &serde_json::json!({"after": n}));
    drop(j);
    let (_, again) = Journal::open::<serde_json::Value>(&path).expect("reopens");
    assert_eq!(again.len(), n + usize::from(!live.iter().any(|(id, _)| *id == u64::MAX)));
});
