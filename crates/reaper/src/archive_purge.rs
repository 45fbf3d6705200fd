//! The built-in retention of `reaper_archive` (`[archive] keep`): at start-up and then every
//! `[archive] purge_every`, the daemon deletes the archived rows older than `keep`, in bounded
//! transactions (`reaper_engine::archive::purge_expired`). Several daemons may purge at once:
//! each deletes what is expired and the others find less.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reaper_engine::Database;
use tokio::sync::watch;

/// Archive rows one purge transaction deletes.
const PURGE_BATCH: u32 = 1_000;

/// Purges now and every `every` until `stop`; errors are logged and the next round tries again.
pub(crate) async fn run(
    db: Database,
    keep: Duration,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    loop {
        let before = Utc::now()
            .checked_sub_signed(keep)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // A stop ends the purge at once: each of its transactions commits or rolls back alone.
        let purged = tokio::select! {
            purged = reaper_engine::archive::purge_expired(&db, before, PURGE_BATCH) => purged,
            _ = stop.wait_for(|stopping| *stopping) => return,
        };
        match purged {
            Ok(0) => {}
            Ok(purged) => {
                tracing::info!(message = "Purged expired archive rows.", purged, %before);
            }
            Err(error) => {
                tracing::warn!(message = "Cannot purge expired archive rows.", %error);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
    }
}
