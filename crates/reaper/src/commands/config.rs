//! `reaper config check`: the effective configuration on standard output (TOML, or JSON with
//! `--json`), secrets redacted, and on standard error the verdict of checking it against what
//! it names: the database is reachable, every target's table and columns exist with types that
//! fit what the catalog declares, reaper's tables exist, the queue answers. Every problem is
//! reported, not only the first; the check writes nothing.

use std::process::ExitCode;
use std::time::Duration;

use reaper_core::config::QueueBackend;
use reaper_engine::schema_check::{self, CheckError};

use super::{CommandError, CommandResult, connect};
use crate::settings::Settings;

/// How long the queue may take to answer.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// One thing the configuration names that does not work: refused (the configuration is wrong,
/// exit status 2) or unreachable (a service is down or missing, exit status 1).
struct Problem {
    refused: bool,
    message: String,
}

/// Prints the configuration, then checks it; the verdict goes to standard error.
pub(crate) async fn check(settings: &Settings, as_json: bool) -> CommandResult {
    outln!("{}", effective(settings, as_json)?);
    let mut problems = database_problems(settings).await;
    problems.extend(queue_problem(settings).await);
    if problems.is_empty() {
        eprintln!(
            "configuration is valid: the database answers, every target's table and columns exist \
             with fitting types, reaper's tables exist, the queue answers"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let refused = problems.iter().all(|problem| problem.refused);
    let heading = format!("configuration check failed ({} problems):", problems.len());
    let text = reaper_core::config::list_problems(&heading, problems.iter().map(|p| &p.message));
    Err(if refused {
        CommandError::Invalid(text)
    } else {
        CommandError::Failed(anyhow::anyhow!(text))
    })
}

/// The effective configuration, secrets redacted, as TOML or JSON.
fn effective(settings: &Settings, as_json: bool) -> anyhow::Result<String> {
    let mut shown = settings.config.clone();
    shown.database.url = reaper_engine::database::redact_url(&shown.database.url);
    shown.queue.url = reaper_engine::database::redact_url(&shown.queue.url);
    // Sentinels and cluster nodes may carry passwords in their URLs too.
    let servers = shown
        .queue
        .sentinel
        .iter_mut()
        .flat_map(|sentinel| sentinel.sentinels.iter_mut())
        .chain(
            shown
                .queue
                .cluster
                .iter_mut()
                .flat_map(|cluster| cluster.nodes.iter_mut()),
        );
    for url in servers {
        *url = reaper_engine::database::redact_url(url);
    }
    if shown.api.read_token.is_some() {
        shown.api.read_token = Some("<redacted>".into());
    }
    if shown.api.token.is_some() {
        shown.api.token = Some("<redacted>".into());
    }
    Ok(if as_json {
        serde_json::to_string_pretty(&shown)?
    } else {
        toml::to_string(&shown)?.trim_end().to_owned()
    })
}

/// The SQLite file a `sqlite:` URL names (`None`: not SQLite, or in memory).
fn sqlite_file(url: &str) -> Option<&std::path::Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && path != ":memory:").then(|| std::path::Path::new(path))
}

/// The database: reachable, the catalog fits it, reaper's tables exist.
async fn database_problems(settings: &Settings) -> Vec<Problem> {
    let url = &settings.config.database.url;
    // A check creates nothing: a missing SQLite file is reported, not made.
    if let Some(file) = sqlite_file(url)
        && !file.exists()
    {
        return vec![Problem {
            refused: false,
            message: format!(
                "database.url: the SQLite file `{}` does not exist",
                file.display()
            ),
        }];
    }
    let db = match connect(settings).await {
        Ok(db) => db,
        Err(error) => {
            return vec![Problem {
                refused: false,
                message: format!("{error:#}"),
            }];
        }
    };
    let mut problems = Vec::new();
    match schema_check::check_catalog(&db, &settings.catalog).await {
        Ok(()) => {}
        Err(CheckError::Config(error)) => {
            problems.extend(error.problems.iter().map(|problem| Problem {
                refused: true,
                message: problem.to_string(),
            }))
        }
        Err(CheckError::Engine(error)) => problems.push(Problem {
            refused: false,
            message: format!("cannot read the database's schema: {error}"),
        }),
    }
    if let Err(error) = reaper_engine::ledger::active(&db, 1).await {
        problems.push(Problem {
            refused: false,
            message: format!(
                "reaper's tables (reaper_jobs, reaper_audit) cannot be read: run `reaper migrate` ({error})"
            ),
        });
    }
    problems
}

/// The queue: Redis answers a PING, and lets reaper's user do what the daemon does
/// ([`crate::queue::check_redis_access`]).
async fn queue_problem(settings: &Settings) -> Option<Problem> {
    let queue = &settings.config.queue;
    match queue.backend {
        QueueBackend::Redis => {
            let ping = async {
                let redis = crate::redis_connection::RedisTarget::from_config(queue)?;
                let mut connection = redis.connect().await?;
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!("queue.url: Redis refused PING: {}", redis.describe(&error))
                    })?;
                crate::queue::check_redis_access(&redis, &mut connection, queue).await
            };
            let problem = match tokio::time::timeout(QUEUE_TIMEOUT, ping).await {
                Ok(Ok(_)) => return None,
                Ok(Err(error)) => format!("{error:#}"),
                Err(_) => format!(
                    "queue.url: Redis at `{}` did not answer within {QUEUE_TIMEOUT:?}",
                    reaper_engine::database::redact_url(&queue.url)
                ),
            };
            Some(Problem {
                refused: false,
                message: problem,
            })
        }
        // The embedded queue is a file `reaper run` creates next to the process: nothing to
        // reach.
        QueueBackend::Sqlite => None,
    }
}
