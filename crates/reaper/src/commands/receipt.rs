//! `reaper receipt JOB` prints a finished job's receipt signed with Ed25519 (the key from the
//! environment, [`crate::signing`]); `reaper receipt verify FILE` checks one: the signature
//! against the public key and, with `--database`, the job's audit chain and key digests in the
//! configured database.

use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use reaper_core::receipt::SignedReceipt;
use reaper_engine::{ledger, receipt};

use super::{CommandError, CommandResult, connect};
use crate::settings::Settings;
use crate::signing;

/// Prints job `id`'s signed receipt.
pub(crate) async fn make(settings: &Settings, id: &str) -> CommandResult {
    let key = signing::signing_key().map_err(CommandError::Invalid)?;
    let db = connect(settings).await?;
    let Some(job) = ledger::get(&db, id).await? else {
        return Err(CommandError::no_job(id));
    };
    if !job.is_finished() {
        return Err(CommandError::Conflict(format!(
            "job {id} is {}; a receipt is made for a finished job",
            job.state
        )));
    }
    let body = receipt::build(&db, &settings.catalog, &job, Utc::now()).await?;
    outln!(
        "{}",
        serde_json::to_string_pretty(&signing::sign(&key, body))?
    );
    Ok(ExitCode::SUCCESS)
}

/// Checks the receipt in `file` with `public_key` (hex) and, with `database`, against the
/// configured database.
pub(crate) async fn verify(
    settings: &Settings,
    file: &std::path::Path,
    public_key: &str,
    database: bool,
) -> CommandResult {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let signed: SignedReceipt = serde_json::from_str(&text).map_err(|error| {
        CommandError::Invalid(format!("{}: not a receipt: {error}", file.display()))
    })?;
    let mut problems = Vec::new();
    if !signing::check(&signed, public_key).map_err(CommandError::Invalid)? {
        problems.push(
            "the signature does not match the receipt and key (it was changed, or signed with \
             another key)"
                .to_owned(),
        );
    }
    if database {
        let db = connect(settings).await?;
        problems.extend(receipt::recheck(&db, &signed.receipt).await?);
    }
    let shown = serde_json::json!({"job": signed.receipt.job_id, "verified": problems.is_empty(), "problems": problems});
    outln!("{}", serde_json::to_string_pretty(&shown)?);
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CommandError::Conflict(format!(
            "the receipt of job {} does not hold: {}",
            signed.receipt.job_id,
            problems.join("; ")
        )))
    }
}
