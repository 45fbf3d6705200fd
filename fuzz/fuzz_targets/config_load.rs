//! The configuration loader as `reaper::settings::load` runs it on a file: TOML through figment
//! into `Config`, then `Config::catalog` and `Config::retention_policies`. Never a panic; a
//! policy that loads submits only valid jobs.
#![no_main]

use figment::Figment;
use figment::providers::{Format, Toml};
use libfuzzer_sys::fuzz_target;
use reaper_core::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Figment::from(Toml::string(text)).extract::<Config>() else {
        return;
    };
    let Ok(catalog) = config.catalog() else {
        return;
    };
    let as_of = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let Ok(policies) = config.retention_policies(&catalog, as_of) else {
        return;
    };
    for policy in policies {
        let request = policy.job_request(policy.latest_window(as_of), "fuzz");
        reaper_core::validate::validate(&request, &catalog, as_of).unwrap_or_else(|error| {
            panic!("policy {} submits an invalid job: {error:?}", policy.name)
        });
    }
});
