//! The job wire format: any JSON value through `job::parse` and `validate::check_json`. Never a
//! panic; a request is returned only when no problem is reported, and then it validates.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let catalog = reaper_fuzz::catalog();
    let as_of = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let parsed = reaper_core::job::parse(&value);
    match reaper_core::validate::check_json(&value, &catalog, as_of) {
        Ok(request) => {
            assert!(
                parsed.errors.is_empty(),
                "accepted with parse errors: {value}"
            );
            reaper_core::validate::validate(&request, &catalog, as_of)
                .unwrap_or_else(|error| panic!("accepted, then invalid: {value}: {error:?}"));
        }
        Err(error) => assert!(
            !error.errors.is_empty(),
            "refused without a reason: {value}"
        ),
    }
});
