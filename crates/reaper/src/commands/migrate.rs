//! `reaper migrate`: create or upgrade reaper's own tables in the target database.

use std::process::ExitCode;

use anyhow::Context;
use sea_orm_migration::MigratorTrait;

use super::{CommandResult, connect};
use crate::settings::Settings;

/// Runs the migrations and says which ran: none ("up to date"), all (the tables were created),
/// or some (upgraded).
pub(crate) async fn run(settings: &Settings) -> CommandResult {
    let db = connect(settings).await?;
    let connection = db.connection();
    let pending: Vec<String> =
        reaper_engine::migration::Migrator::get_pending_migrations(connection)
            .await
            .context("cannot read the migrations table")?
            .iter()
            .map(|migration| migration.name().to_owned())
            .collect();
    let total = reaper_engine::migration::Migrator::migrations().len();
    reaper_engine::migration::Migrator::up(connection, None)
        .await
        .context("migration failed")?;
    let backend = db.backend();
    if pending.is_empty() {
        outln!("reaper tables are up to date ({backend}); nothing to do");
    } else if pending.len() == total {
        outln!(
            "created reaper tables reaper_jobs and reaper_audit ({backend}); applied: {}",
            pending.join(", ")
        );
    } else {
        outln!(
            "upgraded reaper tables ({backend}); applied: {}",
            pending.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
