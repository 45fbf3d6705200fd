//! A Redis intake message (or HTTP body, `--file`): raw bytes as `reaper::producer::parse`
//! reads them — UTF-8, then JSON, then `validate::check_json` — the binary crate's function is
//! these three steps (it has no library to link). Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let as_of = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let _ = reaper_core::validate::check_json(&value, &reaper_fuzz::catalog(), as_of);
});
