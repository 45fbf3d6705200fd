//! The Redis intake: how a service in any language submits a job with plain Redis commands.
//!
//! Wire format (README, "Submitting through Redis"): `LPUSH <queue>:intake '<job JSON>'`, the
//! same JSON as `POST /v1/jobs`. A daemon moves messages atomically into its own claimed list
//! (`<queue>:intake:claimed:<daemon>`), submits each to the ledger, enqueues the new job's id
//! and only then removes the message. A message is therefore never lost by a daemon that dies
//! mid-way: a live daemon moves a dead one's claimed messages back (a daemon is dead after three
//! missed heartbeats in `<queue>:intake:daemons`). Submitting twice after such a crash yields one
//! job when the request has an `idempotency_key` (producers should always set one).
//!
//! Invalid messages are refused with their field-level error: they go, with the error, to the
//! capped list `<queue>:intake:rejected`, and nothing is deleted. So does any message the
//! ledger refuses for a permanent reason, so one poison message never stalls the messages
//! behind it; only a transient failure (database down) leaves a message claimed for a retry.
//!
//! This module owns only the intake keys; apalis owns the queue's other keys.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reaper_engine::{ErrorClass, instruments};
use redis::AsyncCommands;
use serde::Serialize;

use crate::producer::Producer;
use crate::queue::MISSED_HEARTBEATS;

/// Messages one daemon claims at once (submitted concurrently).
const CLAIM_BATCH: usize = 64;
/// Rejected messages kept for producers to inspect (oldest dropped first).
const REJECTED_KEPT: isize = 10_000;

/// The intake's Redis keys for one queue.
#[derive(Debug, Clone)]
pub(crate) struct IntakeKeys {
    /// LIST: producers `LPUSH` job JSON here.
    pub(crate) intake: String,
    /// LIST: messages refused, newest first, with their error.
    pub(crate) rejected: String,
    /// ZSET: daemon name → last heartbeat (unix seconds).
    daemons: String,
    claimed_prefix: String,
}

impl IntakeKeys {
    pub(crate) fn new(queue_name: &str) -> Self {
        Self {
            intake: format!("{queue_name}:intake"),
            rejected: format!("{queue_name}:intake:rejected"),
            daemons: format!("{queue_name}:intake:daemons"),
            claimed_prefix: format!("{queue_name}:intake:claimed:"),
        }
    }

    fn claimed(&self, daemon: &str) -> String {
        format!("{}{daemon}", self.claimed_prefix)
    }
}

/// What a rejected message records.
#[derive(Debug, Serialize)]
struct Rejection<'a> {
    at: String,
    error: String,
    message: &'a str,
}

/// Everything the intake loop needs.
#[derive(Debug)]
pub(crate) struct Intake {
    pub(crate) keys: IntakeKeys,
    pub(crate) daemon: String,
    pub(crate) redis: crate::redis_connection::RedisTarget,
    pub(crate) heartbeat: Duration,
    pub(crate) producer: Producer,
}

/// Moves up to `ARGV[1]` messages from the intake (oldest first) to the daemon's claimed list.
const CLAIM_SCRIPT: &str = r"
local moved = {}
for i = 1, tonumber(ARGV[1]) do
  local message = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not message then break end
  moved[#moved + 1] = message
end
return moved
";

/// Hands a dead daemon's claimed messages back to the intake, oldest to be taken first, and
/// forgets the daemon.
const RETURN_SCRIPT: &str = r"
local returned = 0
while true do
  local message = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not message then break end
  returned = returned + 1
end
redis.call('ZREM', KEYS[3], ARGV[1])
return returned
";

impl Intake {
    /// Runs until `stop` turns true, then hands back anything claimed but not submitted.
    pub(crate) async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut pause = Duration::ZERO;
        loop {
            if *stop.borrow() {
                break;
            }
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|stopping| *stopping) => break,
                }
            }
            // A blocking pop holds its connection; this loop has its own.
            let mut connection = match self.redis.connect().await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::error!(message = "Intake cannot reach Redis.", %error);
                    pause = next_pause(pause);
                    continue;
                }
            };
            match self.serve(&mut connection, &mut stop).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::error!(message = "Intake stopped on an error; restarting.", %error);
                    pause = next_pause(pause);
                }
            }
        }
        if let Ok(mut connection) = self.redis.connect().await
            && let Err(error) = self.hand_back(&mut connection, &self.daemon).await
        {
            tracing::warn!(message = "Could not hand back claimed intake messages.", %error);
        }
    }

    async fn serve(
        &self,
        connection: &mut crate::redis_connection::RedisConnection,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let claimed = self.keys.claimed(&self.daemon);
        // Messages left claimed under this name by an earlier failed loop are served first.
        // Bytes, not strings: a message that is not UTF-8 must reach `submit` to be rejected,
        // not fail the read of every message claimed with it.
        let mut leftover: Vec<Vec<u8>> = connection.lrange(&claimed, 0, -1).await?;
        leftover.reverse();
        let mut last_heartbeat = None::<std::time::Instant>;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if last_heartbeat.is_none_or(|at| at.elapsed() >= self.heartbeat) {
                self.heartbeat_and_recover(connection).await?;
                last_heartbeat = Some(std::time::Instant::now());
            }
            let messages = if leftover.is_empty() {
                self.claim(connection, &claimed).await?
            } else {
                std::mem::take(&mut leftover)
            };
            if messages.is_empty() {
                continue;
            }
            let outcomes = futures::future::join_all(
                messages
                    .iter()
                    .map(|message| self.submit(connection.clone(), message)),
            )
            .await;
            let mut transient = None;
            for (message, outcome) in messages.iter().zip(outcomes) {
                match outcome {
                    // Accepted or refused for good: the message is done with.
                    Ok(()) => {
                        let _: i64 = connection.lrem(&claimed, 1, message).await?;
                    }
                    Err(error) => transient = Some(error),
                }
            }
            if let Some(error) = transient {
                // Left claimed; served again first after the pause.
                return Err(error);
            }
        }
    }

    /// Waits up to a second for a message, then takes whatever else is waiting.
    async fn claim(
        &self,
        connection: &mut crate::redis_connection::RedisConnection,
        claimed: &str,
    ) -> anyhow::Result<Vec<Vec<u8>>> {
        let first: Option<Vec<u8>> = connection
            .blmove(
                &self.keys.intake,
                claimed,
                redis::Direction::Right,
                redis::Direction::Left,
                1.0,
            )
            .await?;
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        let mut messages = vec![first];
        let more: Vec<Vec<u8>> = redis::Script::new(CLAIM_SCRIPT)
            .key(&self.keys.intake)
            .key(claimed)
            .arg(CLAIM_BATCH - 1)
            .invoke_async(connection)
            .await?;
        messages.extend(more);
        Ok(messages)
    }

    /// Submits one message. `Err` when the message could not be judged (it stays claimed).
    async fn submit(
        &self,
        mut connection: crate::redis_connection::RedisConnection,
        message: &[u8],
    ) -> anyhow::Result<()> {
        let request = match crate::producer::parse(message, &self.producer.catalog) {
            Ok(request) => request,
            Err(refused) => {
                instruments::job_submitted("redis", false);
                return self
                    .reject(&mut connection, message, refused.to_string())
                    .await;
            }
        };
        match self.producer.accept(&request, "redis", None).await {
            Ok(_) => Ok(()),
            // Refused for good (invalid, a reused key, or anything the database will never
            // accept from this message): it goes to the rejected list, and the intake goes on
            // to the messages behind it.
            Err(error) if error.class() == ErrorClass::Permanent => {
                self.reject(&mut connection, message, error.to_string())
                    .await
            }
            // A transient failure is the deployment's (database down), not the message's: it
            // stays claimed and is tried again.
            Err(error) => Err(error.into()),
        }
    }

    async fn reject(
        &self,
        connection: &mut crate::redis_connection::RedisConnection,
        message: &[u8],
        error: String,
    ) -> anyhow::Result<()> {
        let message = String::from_utf8_lossy(message);
        tracing::warn!(message = "Refused a job from the Redis intake.", %error);
        let record = serde_json::to_string(&Rejection {
            at: Utc::now().to_rfc3339(),
            error,
            message: &message,
        })?;
        redis::pipe()
            .lpush(&self.keys.rejected, record)
            .ignore()
            .ltrim(&self.keys.rejected, 0, REJECTED_KEPT - 1)
            .ignore()
            .query_async::<()>(connection)
            .await?;
        Ok(())
    }

    /// Records this daemon as alive and hands back the claimed messages of daemons silent for
    /// three heartbeats.
    async fn heartbeat_and_recover(
        &self,
        connection: &mut crate::redis_connection::RedisConnection,
    ) -> anyhow::Result<()> {
        let now = Utc::now().timestamp();
        let _: i64 = connection
            .zadd(&self.keys.daemons, &self.daemon, now)
            .await?;
        let silence = i64::try_from(self.heartbeat.as_secs().max(1))
            .unwrap_or(i64::MAX)
            .saturating_mul(MISSED_HEARTBEATS as i64);
        let dead: Vec<String> = connection
            .zrangebyscore(&self.keys.daemons, "-inf", now - silence)
            .await?;
        for daemon in dead {
            let returned = self.hand_back(connection, &daemon).await?;
            tracing::warn!(message = "Handed back the intake messages of a dead daemon.", daemon = %daemon, returned);
        }
        Ok(())
    }

    async fn hand_back(
        &self,
        connection: &mut crate::redis_connection::RedisConnection,
        daemon: &str,
    ) -> anyhow::Result<i64> {
        Ok(redis::Script::new(RETURN_SCRIPT)
            .key(self.keys.claimed(daemon))
            .key(&self.keys.intake)
            .key(&self.keys.daemons)
            .arg(daemon)
            .invoke_async(connection)
            .await?)
    }
}

fn next_pause(pause: Duration) -> Duration {
    (pause * 2).clamp(Duration::from_millis(250), Duration::from_secs(5))
}
