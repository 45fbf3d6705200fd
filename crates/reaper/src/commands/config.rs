//! `reaper config check`: the configuration, checked against the database, printed with its
//! secrets redacted.

use std::process::ExitCode;

use super::{CommandResult, connect_checked};
use crate::settings::Settings;

/// Checks the configuration (and the catalog against the database) and prints it.
pub(crate) async fn check(settings: &Settings) -> CommandResult {
    let mut shown = settings.config.clone();
    shown.database.url = reaper_engine::database::redact_url(&shown.database.url);
    shown.queue.url = reaper_engine::database::redact_url(&shown.queue.url);
    if shown.api.token.is_some() {
        shown.api.token = Some("<redacted>".into());
    }
    connect_checked(settings).await?;
    outln!("{}", toml_like(&shown)?);
    outln!("# configuration is valid; every target exists in the database");
    Ok(ExitCode::SUCCESS)
}

/// The effective configuration as pretty JSON (one shape, no TOML serializer needed).
fn toml_like(config: &reaper_core::config::Config) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(config)?)
}
