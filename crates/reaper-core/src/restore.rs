//! Restore: undoing an `archive` job (its rows put back from `reaper_archive`) or a `soft` job
//! (its soft-delete mark cleared where it is still the job's), as a job of its own.
//!
//! A restore job is a [`JobRequest`] on the source job's target with `restore` naming the
//! source; it has no filter, and runs in mode [`Mode::Restore`] (its audit rows say
//! `restore`). It walks the source job in bounded batches under its own lease and checkpoint
//! (an archive row id, or the source's audit batch number for a soft job), so it resumes after
//! a crash and stops on cancel or pause like any job. An archive job across relations is
//! restored newest copy first (parents before the rows that refer to them), its nulled columns
//! given their values back. A row whose key exists again is never overwritten: it is counted
//! and reported ([`crate::lifecycle::RestoreReport`], per table across relations), and the rest
//! goes on. This module decides which jobs can be restored; the engine runs the batches.

use crate::catalog::{Mode, Target};
use crate::job::JobRequest;
use crate::lifecycle::JobState;
use crate::sql::rows::JobRecord;

/// What a restore undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Rows copied to `reaper_archive`, put back.
    Archive,
    /// Rows soft-deleted; the mark is cleared.
    Soft,
}

/// The mode a job ran in: its own, or its target's default (a restore's: [`Mode::Restore`]).
pub fn mode_of(request: &JobRequest, target: &Target) -> Mode {
    if request.restore.is_some() {
        return Mode::Restore;
    }
    request.mode.unwrap_or(target.default_mode)
}

/// Whether job `source` (with its stored `request`, on `target`) can be restored, and how;
/// otherwise why not, in words for the person who asked.
pub fn check_source(
    source: &JobRecord,
    request: &JobRequest,
    target: &Target,
) -> Result<SourceKind, String> {
    let id = &source.id;
    if !JobState::FINISHED.contains(&source.state) {
        return Err(format!(
            "job `{id}` is {}; only a finished job (done, cancelled or dead) can be restored",
            source.state
        ));
    }
    if request.dry_run {
        return Err(format!(
            "job `{id}` was a dry run; it removed nothing, so there is nothing to restore"
        ));
    }
    match mode_of(request, target) {
        Mode::Archive => Ok(SourceKind::Archive),
        Mode::Soft => Ok(SourceKind::Soft),
        Mode::Hard => Err(format!(
            "job `{id}` ran in hard mode: its rows were deleted without a copy, so there is \
             nothing to restore (only archive and soft jobs can be restored)"
        )),
        Mode::Restore => Err(format!(
            "job `{id}` is itself a restore; restore its source job again instead"
        )),
    }
}

/// How a restore is asked for: who, why (a default reason names the source), its batch size
/// (the target's default when absent) and idempotency key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    /// Who asked; recorded in every audit row of the restore.
    pub requested_by: &'a str,
    /// Why; `restore of job ID` when absent.
    pub reason: Option<&'a str>,
    /// Rows per restore batch (archive); the target's batch size when absent.
    pub batch_size: Option<u32>,
    /// Asking twice with the same key yields one restore job.
    pub idempotency_key: Option<&'a str>,
}

/// The restore job of `source`, as `ask` says.
pub fn request(source: &JobRecord, ask: Ask<'_>) -> JobRequest {
    JobRequest {
        target: source.target.clone(),
        filter: Default::default(),
        all_rows: false,
        mode: None,
        batch_size: ask.batch_size,
        max_rows: None,
        stop_at_max_rows: false,
        dry_run: false,
        requested_by: ask.requested_by.to_owned(),
        reason: ask
            .reason
            .map(str::to_owned)
            .unwrap_or_else(|| format!("restore of job {}", source.id)),
        idempotency_key: ask.idempotency_key.map(str::to_owned),
        strategy: None,
        restore: Some(source.id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: JobState) -> JobRecord {
        JobRecord {
            id: "j1".into(),
            idempotency_key: "j1".into(),
            target: "events".into(),
            request: String::new(),
            state,
            checkpoint: None,
            passes: 1,
            rows_deleted: 0,
            rows_held: 0,
            batches: 0,
            attempts: 1,
            max_attempts: 3,
            lease_owner: None,
            lease_expires_at: None,
            run_after: None,
            last_error: None,
            result: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            locked_rows_skipped: false,
            cancel_requested_at: None,
            policy: None,
            pause_requested_at: None,
            chain_head: None,
            due_rows: None,
        }
    }

    fn target() -> Target {
        crate::sql::test_support::job(&serde_json::json!({"all_rows": true})).target
    }

    #[test]
    fn archive_and_soft_jobs_are_restored_hard_unfinished_and_dry_runs_are_refused() {
        let done = record(JobState::Done);
        let ops = Ask {
            requested_by: "ops",
            ..Ask::default()
        };
        let mut source = request(&done, ops);
        source.restore = None;
        source.all_rows = true;
        // The target's default is hard.
        let refused = check_source(&done, &source, &target()).unwrap_err();
        assert!(refused.contains("hard mode"), "{refused}");
        source.mode = Some(Mode::Archive);
        assert_eq!(
            check_source(&done, &source, &target()),
            Ok(SourceKind::Archive)
        );
        source.mode = Some(Mode::Soft);
        assert_eq!(
            check_source(&record(JobState::Cancelled), &source, &target()),
            Ok(SourceKind::Soft)
        );
        let running = check_source(&record(JobState::Running), &source, &target()).unwrap_err();
        assert!(running.contains("only a finished job"), "{running}");
        source.dry_run = true;
        assert!(check_source(&done, &source, &target()).is_err());
        let restore = request(
            &done,
            Ask {
                reason: Some("oops"),
                ..ops
            },
        );
        assert_eq!(restore.reason, "oops");
        assert_eq!(restore.restore.as_deref(), Some("j1"));
        assert!(
            check_source(&done, &restore, &target())
                .unwrap_err()
                .contains("itself a restore")
        );
    }
}
