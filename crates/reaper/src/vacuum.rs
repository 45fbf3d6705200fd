//! Removing what apalis-redis keeps of finished messages. apalis acks a message by adding its
//! id to `Q:done` (or `Q:dead`) and keeps its payload in `Q:data` and its metadata in
//! `Q:meta:ID` forever — about 410 bytes a job, 400 MB a million jobs. The ledger is the
//! record of every job, so a finished message is worth nothing: every `queue.vacuum_every`, one
//! daemon's pass removes the ids from both sets with their data and metadata. apalis' own
//! `Vacuum` would leave the ids in the sets, which grow just the same.
//!
//! The pass also clears the id's field in `Q:meta:result`, as apalis' own `vacuum.lua` does:
//! apalis 1.0 writes a result into `Q:meta:ID`, but its vacuum scripts still clean that older
//! per-queue result hash, so a queue filled by another apalis version is left bounded too.
//!
//! Safe beside running workers: an id reaches `done` or `dead` only when its message is acked
//! for good (a retry is a new message with a new id), and each chunk is one atomic script.

use std::time::Duration;

use tokio::sync::watch;

/// Ids one script call removes (per set), so Redis is never blocked for long.
const CHUNK: u32 = 1_000;

/// Pops up to ARGV[2] ids from each finished set and deletes their data and metadata.
/// KEYS[1] = `Q:done`, KEYS[2] = `Q:dead`, KEYS[3] = `Q:data`; ARGV[1] = `Q:meta` (so the
/// script clears `Q:meta:ID` and the id's field of `Q:meta:result`).
const VACUUM_SCRIPT: &str = r"
local removed = 0
for _, set in ipairs({KEYS[1], KEYS[2]}) do
  local ids = redis.call('SPOP', set, ARGV[2])
  for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', ARGV[1] .. ':result', id)
    redis.call('DEL', ARGV[1] .. ':' .. id)
    removed = removed + 1
  end
end
return removed
";

/// The keys of queue `name` the vacuum touches.
#[derive(Debug, Clone)]
pub(crate) struct VacuumKeys {
    done: String,
    dead: String,
    data: String,
    meta: String,
}

impl VacuumKeys {
    pub(crate) fn new(name: &str) -> Self {
        let config = apalis_redis::Config::default().queue(name);
        Self {
            done: config.done_jobs_set(),
            dead: config.dead_jobs_set(),
            data: config.job_data_hash(),
            meta: config.job_meta_hash(),
        }
    }
}

/// Removes every finished message of the queue; how many.
pub(crate) async fn vacuum(
    connection: &mut crate::redis_connection::RedisConnection,
    keys: &VacuumKeys,
) -> redis::RedisResult<u64> {
    let script = redis::Script::new(VACUUM_SCRIPT);
    let mut total = 0;
    loop {
        let removed: u64 = script
            .key(&keys.done)
            .key(&keys.dead)
            .key(&keys.data)
            .arg(&keys.meta)
            .arg(CHUNK)
            .invoke_async(connection)
            .await?;
        total += removed;
        if removed < u64::from(CHUNK) {
            return Ok(total);
        }
    }
}

/// Vacuums every `every` until `stop`; errors are logged and the next round tries again.
pub(crate) async fn run(
    redis: crate::redis_connection::RedisTarget,
    keys: VacuumKeys,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        let removed = match redis.connect().await {
            Ok(mut connection) => vacuum(&mut connection, &keys)
                .await
                .map_err(anyhow::Error::from),
            Err(error) => Err(error),
        };
        match removed {
            Ok(0) => {}
            Ok(removed) => {
                tracing::debug!(message = "Removed finished queue messages.", removed);
            }
            Err(error) => {
                tracing::warn!(message = "Cannot vacuum finished queue messages.", %error);
            }
        }
    }
}
