//! `reaper migrate`: create or upgrade reaper's own tables in the target database.

use std::process::ExitCode;

use anyhow::Context;
use sea_orm_migration::MigratorTrait;

use super::{CommandResult, connect};
use crate::settings::Settings;

/// Runs the migrations.
pub(crate) async fn run(settings: &Settings) -> CommandResult {
    let db = connect(settings).await?;
    reaper_engine::migration::Migrator::up(db.connection(), None)
        .await
        .context("migration failed")?;
    println!("reaper tables are up to date ({})", db.backend());
    Ok(ExitCode::SUCCESS)
}
