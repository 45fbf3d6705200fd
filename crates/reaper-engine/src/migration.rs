//! reaper's own tables, created by `reaper migrate`, in the target database (only there can the
//! audit entry and the checkpoint commit atomically with the delete).
//!
//! - `reaper_jobs`: the ledger, one row per job (the truth; queues only carry work).
//! - `reaper_audit`: one row per committed batch; unique `(job_id, batch_no)` makes a second
//!   entry for the same batch impossible.
//! - `reaper_holds`: legal holds; every batch reads the active ones first in its transaction.
//! - the audit chain: `prev_hash`/`row_hash` on each audit row, `chain_head` on the job.
//! - `reaper_target_controls`, `reaper_target_control_changes`: live control of targets (an
//!   operator's pause and lowered throttle, and every change to them).
//! - `reaper_target_budgets`: each capped target's shared rows-per-second time line.
//! - `reaper_archive`: the rows `archive` jobs deleted, as JSON, until restored or purged.

use reaper_core::sql;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

/// Runs one of `reaper_core::sql::migration`'s statements (unprepared: DDL and `DO` blocks
/// take no parameters).
async fn execute(manager: &SchemaManager<'_>, statement: &sql::Statement) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared(statement.sql())
        .await
        .map(drop)
}

/// All migrations, in order.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateLedgerAndAudit),
            Box::new(AddCancelRequest),
            Box::new(AddPolicy),
            Box::new(AddLegalHolds),
            Box::new(AddAuditChain),
            Box::new(AddPauseAndActions),
            Box::new(AddRequesterIndex),
            Box::new(AddArchive),
            Box::new(AddTargetControls),
            Box::new(AddTargetBudgets),
            Box::new(AddDueRows),
        ]
    }

    fn migration_table_name() -> DynIden {
        "reaper_migrations".into_iden()
    }
}

#[derive(Debug)]
struct CreateLedgerAndAudit;

impl MigrationName for CreateLedgerAndAudit {
    fn name(&self) -> &str {
        "m20261125_000001_create_ledger_and_audit"
    }
}

/// The audit entry's key list: tens of KB for a 5,000-key batch (uuids: ~200 KB), more than a
/// MySQL `TEXT` (64 KB) holds, hence `LONGTEXT` there.
fn audit_keys_column(backend: sea_orm::DbBackend) -> ColumnDef {
    match backend {
        sea_orm::DbBackend::MySql => ColumnDef::new("deleted_keys")
            .custom("LONGTEXT")
            .not_null()
            .to_owned(),
        _ => text("deleted_keys"),
    }
}

/// `POST /v1/jobs/{id}/cancel` and `reaper cancel`: when somebody asked a running job to stop.
/// Batch transactions refuse to run once it is set.
#[derive(Debug)]
struct AddCancelRequest;

impl MigrationName for AddCancelRequest {
    fn name(&self) -> &str {
        "m20261125_000002_add_cancel_request"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddCancelRequest {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_job_column(
            manager,
            timestamp_with_time_zone_null("cancel_requested_at"),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_job_column(manager, "cancel_requested_at").await
    }
}

/// Adds `column` to `reaper_jobs` unless it is there (a migration that stopped halfway runs
/// again).
async fn add_job_column(manager: &SchemaManager<'_>, mut column: ColumnDef) -> Result<(), DbErr> {
    let name = column.get_column_name();
    if manager.has_column("reaper_jobs", &name).await? {
        return Ok(());
    }
    manager
        .alter_table(
            Table::alter()
                .table("reaper_jobs")
                .add_column(&mut column)
                .to_owned(),
        )
        .await
}

/// Drops `column` from `reaper_jobs`.
async fn drop_job_column(manager: &SchemaManager<'_>, column: &'static str) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table("reaper_jobs")
                .drop_column(column)
                .to_owned(),
        )
        .await
}

/// Retention: which policy submitted a job, so its runs can be listed (`reaper policies`,
/// `/v1/policies`, the per-policy metrics) without scanning the ledger. On MySQL/MariaDB the
/// idempotency key also becomes case-sensitive (binary collation), as on the other backends:
/// `Erase-1` and `erase-1` are two keys, and no producer key can stand in for a policy's.
///
/// Building the index locks `reaper_jobs` against writes for its duration (seconds on a ledger
/// of millions of jobs), and batches waiting on it fail their short lock timeout and retry:
/// migrate with the daemons stopped (docs/operations.md).
#[derive(Debug)]
struct AddPolicy;

impl MigrationName for AddPolicy {
    fn name(&self) -> &str {
        "m20261130_000003_add_policy"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddPolicy {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column("reaper_jobs", "policy").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table("reaper_jobs")
                        .add_column(string_len_null("policy", 63))
                        .to_owned(),
                )
                .await?;
        }
        // MySQL drops IF NOT EXISTS from CREATE INDEX, and its DDL is not transactional: a
        // rerun after a partial migration must find the index instead of failing on it.
        if !manager
            .has_index("reaper_jobs", "reaper_jobs_policy_created")
            .await?
        {
            create_index(
                manager,
                "reaper_jobs_policy_created",
                "reaper_jobs",
                ["policy", "created_at"],
                false,
            )
            .await?;
        }
        if manager.get_database_backend() == sea_orm::DbBackend::MySql {
            execute(manager, &sql::migration::case_sensitive_idempotency_key()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("reaper_jobs_policy_created")
                    .table("reaper_jobs")
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("reaper_jobs")
                    .drop_column("policy")
                    .to_owned(),
            )
            .await
    }
}

/// Pause and resume of daemon jobs, and the record of every operator action: the
/// `pause_requested_at` mark on `reaper_jobs` (set with the stop mark `cancel_requested_at`; it
/// tells the worker to leave the job `paused`), and `reaper_job_actions` — who cancelled,
/// paused, resumed or retried a job, or ran a policy now, and when — read per job through its
/// `(job_id, id)` index; and `reaper_audit_created (created_at, target, row_count)`, which the
/// dashboard's rows removed per target over the last hour and day read without the heap.
///
/// Building that index locks `reaper_audit` against writes for its duration (it reads every
/// audit row), so batches wait or fail their short lock timeout and retry: migrate with the
/// daemons stopped (docs/operations.md).
#[derive(Debug)]
struct AddPauseAndActions;

impl MigrationName for AddPauseAndActions {
    fn name(&self) -> &str {
        "m20261201_000015_add_pause_and_actions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddPauseAndActions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_job_column(manager, timestamp_with_time_zone_null("pause_requested_at")).await?;
        manager
            .create_table(
                Table::create()
                    .table("reaper_job_actions")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(string_len("job_id", 64))
                    .col(string_len("action", 16))
                    .col(string_len("actor", 200))
                    .col(string_len("outcome", 16))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        // MySQL drops IF NOT EXISTS from CREATE INDEX (see AddPolicy).
        if !manager
            .has_index("reaper_job_actions", "reaper_job_actions_job")
            .await?
        {
            create_index(
                manager,
                "reaper_job_actions_job",
                "reaper_job_actions",
                ["job_id", "id"],
                false,
            )
            .await?;
        }
        // The dashboard's rows per target over the last hour and day: an index-only range scan
        // (10,000,000 audit rows: see docs/dashboard.md for the measurement).
        if !manager
            .has_index("reaper_audit", "reaper_audit_created")
            .await?
        {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name("reaper_audit_created")
                        .table("reaper_audit")
                        .col("created_at")
                        .col("target")
                        .col("row_count")
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("reaper_audit_created")
                    .table("reaper_audit")
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table("reaper_job_actions")
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        drop_job_column(manager, "pause_requested_at").await
    }
}

/// `reaper_jobs_requested_by`: the dashboard's requester filter walks one requester's jobs
/// newest first through it instead of scanning the ledger (see
/// `reaper_core::sql::migration::requester_index`). On MySQL/MariaDB it indexes a virtual
/// column, `requested_by`, which no statement writes and `JOB_COLUMNS` does not read.
#[derive(Debug)]
struct AddRequesterIndex;

impl MigrationName for AddRequesterIndex {
    fn name(&self) -> &str {
        "m20261201_000016_add_requester_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddRequesterIndex {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = match manager.get_database_backend() {
            sea_orm::DbBackend::MySql => {
                if !manager.has_column("reaper_jobs", "requested_by").await? {
                    execute(manager, &sql::migration::requester_column()).await?;
                }
                // MySQL drops IF NOT EXISTS from CREATE INDEX (see AddPolicy).
                if manager
                    .has_index("reaper_jobs", "reaper_jobs_requested_by")
                    .await?
                {
                    return Ok(());
                }
                sql::Backend::MySql
            }
            sea_orm::DbBackend::Postgres => sql::Backend::Postgres,
            _ => sql::Backend::Sqlite,
        };
        execute(manager, &sql::migration::requester_index(backend)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("reaper_jobs_requested_by")
                    .table("reaper_jobs")
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == sea_orm::DbBackend::MySql {
            manager
                .alter_table(
                    Table::alter()
                        .table("reaper_jobs")
                        .drop_column("requested_by")
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// `reaper_jobs.due_rows`: the rows that became due in a retention window, counted by the
/// scheduler when it submits the window's job, so the policies page and API can set what each
/// run removed against what became due (rows removed meanwhile by anything else are gone by
/// the time anyone looks). A nullable column: instant on every backend.
#[derive(Debug)]
struct AddDueRows;

impl MigrationName for AddDueRows {
    fn name(&self) -> &str {
        "m20261202_000023_add_due_rows"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddDueRows {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_job_column(manager, big_integer_null("due_rows")).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_job_column(manager, "due_rows").await
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateLedgerAndAudit {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_ledger(manager).await?;
        create_audit(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("reaper_audit").if_exists().to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table("reaper_jobs").if_exists().to_owned())
            .await
    }
}

/// `reaper_jobs` and its `(state, created_at)` index.
async fn create_ledger(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table("reaper_jobs")
                .if_not_exists()
                .col(string_len("id", 64).primary_key())
                .col(string_len_uniq("idempotency_key", 200))
                .col(string_len("target", 63))
                .col(text("request"))
                .col(string_len("state", 16))
                .col(text_null("checkpoint"))
                .col(big_integer("passes"))
                .col(big_integer("rows_deleted"))
                .col(big_integer("batches"))
                .col(big_integer("attempts"))
                .col(big_integer("max_attempts"))
                .col(string_len_null("lease_owner", 200))
                .col(string_len_null("lease_token", 64))
                .col(timestamp_with_time_zone_null("lease_expires_at"))
                .col(timestamp_with_time_zone_null("run_after"))
                .col(text_null("last_error"))
                .col(text_null("result"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .col(timestamp_with_time_zone_null("started_at"))
                .col(timestamp_with_time_zone_null("finished_at"))
                .col(boolean("locked_rows_skipped").default(false))
                .to_owned(),
        )
        .await?;
    // The reconciler and listings look for unfinished jobs by state.
    create_index(
        manager,
        "reaper_jobs_state_created",
        "reaper_jobs",
        ["state", "created_at"],
        false,
    )
    .await
}

/// `CREATE [UNIQUE] INDEX IF NOT EXISTS name ON table (columns)`.
async fn create_index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: &'static str,
    columns: [&'static str; 2],
    unique: bool,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.if_not_exists().name(name).table(table);
    for column in columns {
        index.col(column);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}

/// `reaper_audit`, its unique `(job_id, batch_no)` index and, on PostgreSQL, how its key lists
/// are stored.
async fn create_audit(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table("reaper_audit")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(string_len("job_id", 64))
                .col(big_integer("batch_no"))
                .col(string_len("target", 63))
                .col(string_len("mode", 8))
                .col(big_integer("row_count"))
                .col(text("first_key"))
                .col(text("last_key"))
                .col(audit_keys_column(manager.get_database_backend()))
                .col(text("requested_by"))
                .col(text("reason"))
                .col(timestamp_with_time_zone("created_at"))
                .to_owned(),
        )
        .await?;
    create_index(
        manager,
        "reaper_audit_job_batch",
        "reaper_audit",
        ["job_id", "batch_no"],
        true,
    )
    .await?;
    if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
        // Each batch writes its keys (tens of KB for 5,000 keys): lz4 where PostgreSQL has
        // it, else uncompressed rather than slowly (see the statement's doc).
        execute(manager, &sql::migration::audit_keys_compression()).await?;
    }
    Ok(())
}

/// Legal holds (issue 14): `reaper_holds`, read by every batch transaction first, and the
/// counters of matching rows left in place under them (`rows_held`, on the job and on each
/// audit row).
#[derive(Debug)]
struct AddLegalHolds;

impl MigrationName for AddLegalHolds {
    fn name(&self) -> &str {
        "m20261201_000014_add_legal_holds"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddLegalHolds {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("reaper_holds")
                    .if_not_exists()
                    .col(string_len("id", 64).primary_key())
                    .col(string_len("target", 63))
                    .col(text_null("held_keys"))
                    .col(text_null("held_filter"))
                    .col(text("reason"))
                    .col(text("placed_by"))
                    .col(timestamp_with_time_zone("placed_at"))
                    .col(timestamp_with_time_zone_null("expires_at"))
                    .col(timestamp_with_time_zone_null("released_at"))
                    .col(text_null("released_by"))
                    .to_owned(),
            )
            .await?;
        if !manager
            .has_index("reaper_holds", "reaper_holds_target_released")
            .await?
        {
            create_index(
                manager,
                "reaper_holds_target_released",
                "reaper_holds",
                ["target", "released_at"],
                false,
            )
            .await?;
        }
        for table in ["reaper_jobs", "reaper_audit"] {
            if !manager.has_column(table, "rows_held").await? {
                manager
                    .alter_table(
                        Table::alter()
                            .table(table)
                            .add_column(big_integer("rows_held").default(0))
                            .to_owned(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["reaper_jobs", "reaper_audit"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .drop_column("rows_held")
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table("reaper_holds").if_exists().to_owned())
            .await
    }
}

/// The tamper-evident audit log (issue 14): each audit row's `prev_hash` and `row_hash`, the
/// job's `chain_head` (see `reaper_core::audit_chain`). Rows written before this migration have
/// none; `reaper audit verify` reports such a job's first row as changed.
#[derive(Debug)]
struct AddAuditChain;

impl MigrationName for AddAuditChain {
    fn name(&self) -> &str {
        "m20261201_000014_add_audit_chain"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddAuditChain {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, column) in [
            ("reaper_audit", "prev_hash"),
            ("reaper_audit", "row_hash"),
            ("reaper_jobs", "chain_head"),
        ] {
            if !manager.has_column(table, column).await? {
                manager
                    .alter_table(
                        Table::alter()
                            .table(table)
                            .add_column(string_len_null(column, 64))
                            .to_owned(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, column) in [
            ("reaper_audit", "prev_hash"),
            ("reaper_audit", "row_hash"),
            ("reaper_jobs", "chain_head"),
        ] {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Archive mode and restore (issue 14): `reaper_archive`, one row per row an `archive` job
/// deleted (its key as text, the whole row as JSON: `jsonb` on PostgreSQL, `LONGTEXT` on MySQL,
/// text on SQLite), written in the batch transaction that deletes it. `(job_id, id)` serves a
/// restore's walk through one job's rows; `archived_at` the built-in purge of old rows.
#[derive(Debug)]
struct AddArchive;

impl MigrationName for AddArchive {
    fn name(&self) -> &str {
        "m20261202_000017_add_archive"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddArchive {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let row_json = match manager.get_database_backend() {
            sea_orm::DbBackend::Postgres => ColumnDef::new("row_json")
                .custom("jsonb")
                .not_null()
                .to_owned(),
            // Whatever the database's default character set, a row's text survives.
            sea_orm::DbBackend::MySql => ColumnDef::new("row_json")
                .custom("LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                .not_null()
                .to_owned(),
            _ => text("row_json"),
        };
        manager
            .create_table(
                Table::create()
                    .table("reaper_archive")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(string_len("job_id", 64))
                    .col(string_len("target", 63))
                    .col(text("row_key"))
                    .col(row_json)
                    .col(timestamp_with_time_zone("archived_at"))
                    .to_owned(),
            )
            .await?;
        // MySQL drops IF NOT EXISTS from CREATE INDEX (see AddPolicy).
        if !manager
            .has_index("reaper_archive", "reaper_archive_job_id")
            .await?
        {
            create_index(
                manager,
                "reaper_archive_job_id",
                "reaper_archive",
                ["job_id", "id"],
                false,
            )
            .await?;
        }
        if !manager
            .has_index("reaper_archive", "reaper_archive_archived_at")
            .await?
        {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name("reaper_archive_archived_at")
                        .table("reaper_archive")
                        .col("archived_at")
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("reaper_archive").if_exists().to_owned())
            .await
    }
}

/// Live control of targets (issue 16): `reaper_target_controls`, one row per target an operator
/// changed (paused, lowered throttle values, health thresholds as JSON, who, when, why), read by
/// every daemon at most every half second; and `reaper_target_control_changes`, every change
/// (who, when, what it left), read per target through its `(target, id)` index. New tables
/// only: no lock on a table batches write.
#[derive(Debug)]
struct AddTargetControls;

impl MigrationName for AddTargetControls {
    fn name(&self) -> &str {
        "m20261202_000019_add_target_controls"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddTargetControls {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("reaper_target_controls")
                    .if_not_exists()
                    .col(string_len("target", 63).primary_key())
                    .col(boolean("paused").default(false))
                    .col(big_integer_null("max_rows_per_second"))
                    .col(big_integer_null("max_batch_size"))
                    .col(big_integer_null("min_batch_size"))
                    .col(big_integer_null("target_batch_duration_ms"))
                    .col(text_null("thresholds"))
                    .col(text_null("reason"))
                    .col(string_len("changed_by", 200))
                    .col(timestamp_with_time_zone("changed_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("reaper_target_control_changes")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(string_len("target", 63))
                    .col(string_len("action", 16))
                    .col(text("detail"))
                    .col(string_len("actor", 200))
                    .col(text_null("reason"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        // MySQL drops IF NOT EXISTS from CREATE INDEX (see AddPolicy).
        if !manager
            .has_index(
                "reaper_target_control_changes",
                "reaper_target_control_changes_target",
            )
            .await?
        {
            create_index(
                manager,
                "reaper_target_control_changes_target",
                "reaper_target_control_changes",
                ["target", "id"],
                false,
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["reaper_target_control_changes", "reaper_target_controls"] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The shared rows-per-second budget (issue 16): `reaper_target_budgets`, one row per capped
/// target holding the end of its time line (`free_at`, microseconds on the database's clock),
/// advanced by every batch of every daemon before it runs (`reaper_core::throttle`).
#[derive(Debug)]
struct AddTargetBudgets;

impl MigrationName for AddTargetBudgets {
    fn name(&self) -> &str {
        "m20261202_000020_add_target_budgets"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddTargetBudgets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("reaper_target_budgets")
                    .if_not_exists()
                    .col(string_len("target", 63).primary_key())
                    .col(big_integer("free_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table("reaper_target_budgets")
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
