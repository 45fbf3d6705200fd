//! The command line: clap's schema of every command and flag (`reaper --help` is generated from
//! these doc comments), and the defaults a command fills in from the environment.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use reaper_core::catalog::Mode;

/// reaper deletes database rows safely, in the background, at scale.
#[derive(Debug, Parser)]
#[command(name = "reaper", version, about)]
pub(crate) struct Cli {
    /// Configuration file; the embedded defaults (config/reaper.toml) when absent.
    #[arg(long, global = true, env = "REAPER_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once per process; boxing would buy nothing.
pub(crate) enum Command {
    /// Zero set-up tour: a SQLite database with sample rows, the embedded queue, one worker;
    /// runs a hard delete, a soft delete and a dry run, then prints a summary and the audit log.
    Demo {
        /// Where the demo's database and queue files go (recreated on every run).
        #[arg(long, default_value = ".reaper/demo")]
        dir: PathBuf,
    },
    /// Commands that read the configuration.
    #[command(flatten)]
    Configured(ConfiguredCommand),
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once per process; boxing would buy nothing.
pub(crate) enum ConfiguredCommand {
    /// Create or upgrade reaper's own tables (reaper_jobs, reaper_audit) in the target database.
    Migrate,
    /// Submit a job to the ledger and the queue, from flags or as JSON (see README); prints
    /// its id.
    Enqueue {
        /// A file holding the job's JSON; `-` reads standard input. No job flag goes with it.
        #[arg(long, conflicts_with_all = ["json", "EnqueueFlags"])]
        file: Option<PathBuf>,
        /// The job's JSON inline. No job flag goes with it (`--reason` belongs in the JSON).
        #[arg(long, conflicts_with = "EnqueueFlags")]
        json: Option<String>,
        #[command(flatten)]
        flags: crate::enqueue_flags::EnqueueFlags,
    },
    /// Show a job: state, rows, batches, attempts, last error, progress, result.
    Status {
        /// The job id.
        job: String,
        /// Also print the job's audit entries, one page of them (`--limit`, `--after`); standard
        /// error says how to get the next page.
        #[arg(long)]
        audit: bool,
        /// With --audit: the entries after this batch number.
        #[arg(long, requires = "audit", default_value_t = 0, value_name = "BATCH")]
        after: i64,
        /// With --audit: at most this many entries.
        #[arg(long, requires = "audit", default_value_t = 100)]
        limit: u32,
    },
    /// List jobs, newest first.
    Jobs {
        /// Only jobs in this state (pending, running, paused, done, dead, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs on this target.
        #[arg(long)]
        target: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask a job to stop: a pending job is cancelled at once, a running one at its next batch
    /// boundary. What it deleted stays deleted (and audited).
    Cancel {
        /// The job id.
        job: String,
    },
    /// Pause a daemon job: a pending job at once, a running one at its next batch boundary. It
    /// keeps its checkpoint, and no worker takes it until `reaper resume`.
    Pause {
        /// The job id.
        job: String,
    },
    /// Hand a paused job back to the daemons: pending again, on the queue, from its checkpoint.
    Resume {
        /// The job id.
        job: String,
    },
    /// Give a dead job one more attempt from its checkpoint (recorded in its actions).
    Retry {
        /// The job id.
        job: String,
    },
    /// Undo a finished archive or soft-delete job: submits a restore job (its id is printed)
    /// that puts the archived rows back, every column typed (archive), or clears the soft-delete
    /// column where it still holds the job's value (soft), in bounded batches with its own audit
    /// (mode `restore`); resumable and cancellable like any job. A row whose key exists again is
    /// not overwritten: `reaper status` of the restore job lists it. A hard job cannot be
    /// restored (exit status 2).
    Restore {
        /// The archive or soft-delete job to undo.
        job: String,
        /// Why (recorded in the restore's audit rows; default: "restore of job JOB").
        #[arg(long)]
        reason: Option<String>,
        /// Who asks (default: $USER).
        #[arg(long)]
        requested_by: Option<String>,
        /// Archived rows per restore batch (default: the target's batch_size).
        #[arg(long)]
        batch_size: Option<u32>,
    },
    /// Place a legal hold: rows of a target (by key or by filter) that no batch of any job may
    /// remove until it is released or expires. Takes effect for every batch that begins after
    /// this command returns; prints the hold as JSON.
    Hold {
        #[command(flatten)]
        args: crate::commands::holds::HoldArgs,
    },
    /// List legal holds as JSON, newest first: the active ones (or with --all every one).
    Holds {
        /// Also the released and expired ones.
        #[arg(long)]
        all: bool,
        /// How many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Release a legal hold: batches that begin after this command returns may remove its rows.
    Release {
        /// The hold id.
        hold: String,
        /// Who releases it (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Live control of targets on every daemon: list, show, pause, resume, lower the throttle
    /// (`set`), clear it. Daemons apply a change to the batches they start within a second;
    /// each change is recorded with who made it.
    Target {
        #[command(subcommand)]
        command: crate::commands::targets::TargetCommand,
    },
    /// Run a retention purge now, in the foreground, without a daemon: a policy's
    /// (`--policy NAME`) or ad hoc (`--target T --older-than 30d`). Shows a progress bar;
    /// Ctrl-C stops at a batch boundary and prints how to resume.
    Purge {
        #[command(flatten)]
        args: crate::purge::PurgeArgs,
    },
    /// List the retention policies: schedule, next and last run, last result, and how many
    /// rows the next run would remove.
    Policies {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run workers until SIGTERM/SIGINT (or, with --until-idle, until no job is unfinished).
    Run {
        /// Exit once the ledger holds no pending or running job.
        #[arg(long)]
        until_idle: bool,
    },
    /// Print a finished job's receipt as JSON, signed with Ed25519 (the key's seed from
    /// $REAPER_RECEIPT_KEY or the file $REAPER_RECEIPT_KEY_FILE names, never the config file):
    /// the request, start and end, per table the rows removed and held with the holds' reasons,
    /// a digest of the removed keys, the audit chain's head, and how many rows still match now.
    /// `reaper receipt verify FILE --public-key HEX [--database]` checks one.
    #[command(args_conflicts_with_subcommands = true)]
    Receipt {
        /// The job id.
        job: Option<String>,
        #[command(subcommand)]
        command: Option<ReceiptCommand>,
    },
    /// Audit commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ReceiptCommand {
    /// Check a receipt: its signature with the public key, and with --database the job's audit
    /// chain and key digests in the configured database. Exits 1 when it does not hold.
    Verify {
        /// The receipt (JSON, as `reaper receipt JOB` printed it).
        file: std::path::PathBuf,
        /// The Ed25519 public key (64 hex digits).
        #[arg(long)]
        public_key: String,
        /// Also re-check the audit chain and the key digests in the database.
        #[arg(long)]
        database: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check a job's tamper-evident audit chain: every audit row against its hash and the row
    /// before it, the newest against the job's chain head. Prints the verdict as JSON; exits 1
    /// naming the first row changed, removed or reordered.
    Verify {
        /// The job id.
        job: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the effective configuration (secrets redacted) on standard output, then check it
    /// against the database and the queue: the verdict, every problem, goes to standard error.
    Check {
        /// Print the configuration as JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// Who asks, for a job's `requested_by`: the flag, else `$USER`, else `cli`.
pub(crate) fn requested_by(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok().filter(|user| !user.is_empty()))
        .unwrap_or_else(|| "cli".into())
}

/// The `--mode` flag: absent (the target's default), `hard`, `soft` or `archive`.
pub(crate) fn parse_mode(given: Option<&str>) -> Result<Option<Mode>, String> {
    given
        .map(|text| text.parse().map_err(|error| format!("--mode: {error}")))
        .transpose()
}
