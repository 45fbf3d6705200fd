//! The legal-hold commands: `reaper hold` places one, `reaper holds` lists them, `reaper
//! release` ends one. A hold takes effect for every batch that begins after the command
//! returns (see `reaper_core::holds`).

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use reaper_core::holds::{Hold, HoldRequest};
use reaper_engine::{EngineError, holds};

use super::{CommandError, CommandResult, check_ledger, connect};
use crate::settings::Settings;

/// What `reaper hold` was given.
#[derive(Debug, clap::Args)]
pub(crate) struct HoldArgs {
    /// The catalog target whose rows are held.
    #[arg(long)]
    pub(crate) target: String,
    /// A held primary key (repeat for more). Either keys or --filter.
    #[arg(long = "key")]
    pub(crate) keys: Vec<String>,
    /// Or: every row this filter matches, as JSON in the jobs' filter language
    /// (`{"all": [{"column": "user_id", "op": "eq", "value": 42}]}`).
    #[arg(long)]
    pub(crate) filter: Option<String>,
    /// Why the rows are held (case, court order).
    #[arg(long)]
    pub(crate) reason: String,
    /// Who places it (default: $USER).
    #[arg(long)]
    pub(crate) placed_by: Option<String>,
    /// When the hold ends by itself (RFC 3339); never when absent.
    #[arg(long)]
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

impl HoldArgs {
    /// The hold request these flags describe; a `--filter` that is not JSON is refused input.
    fn request(self) -> Result<HoldRequest, CommandError> {
        let filter = self
            .filter
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|error| CommandError::Invalid(format!("--filter: {error}")))?;
        // Numbers as numbers (integer keys), anything else as text (text and uuid keys).
        let keys = (!self.keys.is_empty()).then(|| {
            self.keys
                .iter()
                .map(|key| {
                    key.parse::<i64>()
                        .map_or_else(|_| serde_json::Value::from(key.clone()), Into::into)
                })
                .collect()
        });
        Ok(HoldRequest {
            target: self.target,
            keys,
            filter,
            reason: self.reason,
            placed_by: crate::cli::requested_by(self.placed_by),
            expires_at: self.expires_at,
        })
    }
}

/// Places a hold and prints it as JSON.
pub(crate) async fn place(settings: &Settings, args: HoldArgs) -> CommandResult {
    let request = args.request()?;
    let db = connect(settings).await?;
    check_ledger(&db).await?;
    match holds::place(&db, &settings.catalog, &request, Utc::now()).await {
        Ok(hold) => print(&hold),
        Err(EngineError::Invalid(error)) => Err(CommandError::Invalid(error.to_string())),
        Err(error) => Err(error.into()),
    }
}

/// Lists holds, newest first: the active ones, or with `all` every one ever placed.
pub(crate) async fn list(settings: &Settings, all: bool, limit: u32) -> CommandResult {
    let db = connect(settings).await?;
    let now = Utc::now();
    let listed = holds::list(&db, (!all).then_some(now), limit).await?;
    outln!("{}", serde_json::to_string_pretty(&listed)?);
    Ok(ExitCode::SUCCESS)
}

/// Releases a hold and prints it.
pub(crate) async fn release(settings: &Settings, id: &str, by: Option<String>) -> CommandResult {
    let db = connect(settings).await?;
    let by = crate::cli::requested_by(by);
    match holds::release(&db, id, &by, Utc::now()).await? {
        Some(hold) => print(&hold),
        None => Err(CommandError::NotFound(format!("no hold `{id}`"))),
    }
}

fn print(hold: &Hold) -> CommandResult {
    outln!("{}", serde_json::to_string_pretty(hold)?);
    Ok(ExitCode::SUCCESS)
}
