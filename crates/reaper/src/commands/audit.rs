//! `reaper audit verify JOB`: the job's audit chain checked against its rows and its ledger
//! row's head (`reaper_core::audit_chain`). Prints the verdict as JSON; exit 0 when the chain
//! holds, 1 naming the first row changed, removed or reordered.

use std::process::ExitCode;

use reaper_engine::audit_chain;

use super::{CommandError, CommandResult, connect};
use crate::settings::Settings;

/// Checks job `id`'s audit chain.
pub(crate) async fn verify(settings: &Settings, id: &str) -> CommandResult {
    let db = connect(settings).await?;
    let Some(verdict) = audit_chain::verify_job(&db, id).await? else {
        return Err(CommandError::no_job(id));
    };
    match verdict {
        Ok(verified) => {
            let shown = serde_json::json!({"job": id, "verified": true, "rows": verified.rows, "head": verified.head});
            outln!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(first_break) => {
            let shown =
                serde_json::json!({"job": id, "verified": false, "first_break": first_break});
            outln!("{}", serde_json::to_string_pretty(&shown)?);
            Err(CommandError::Conflict(format!(
                "job {id}: the audit chain is broken ({}); the audit rows were changed, \
                 removed or reordered after they were written",
                describe(&first_break)
            )))
        }
    }
}

fn describe(first_break: &reaper_core::audit_chain::ChainBreak) -> String {
    use reaper_core::audit_chain::ChainBreak;
    match first_break {
        ChainBreak::Changed { batch_no } => format!("batch {batch_no} was changed"),
        ChainBreak::Removed {
            expected_batch,
            found_batch,
        } => format!("batch {expected_batch} is missing (found batch {found_batch} in its place)"),
        ChainBreak::Reordered { batch_no } => format!("batch {batch_no} is out of order"),
        ChainBreak::HeadMismatch { last_batch } => format!(
            "the newest row (batch {last_batch}) is not the job's chain head: rows after it were removed"
        ),
    }
}
