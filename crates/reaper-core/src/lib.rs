//! reaper's pure core.
//!
//! This crate owns the *words* of reaper and every decision that can be made without touching
//! the outside world:
//!
//! - [`audit_chain`]: the hash chain over a job's audit rows and its check;
//! - [`catalog`]: the targets a deployment allows jobs to delete from;
//! - [`graph`]: relations between targets and the deepest-first plan of a job on a parent;
//! - [`holds`]: legal holds, their validation and the compiled form every batch excludes;
//! - [`job`]: the public JSON wire format of a deletion job (what producers send);
//! - [`lifecycle`]: a job's states in the ledger and the result it ends with;
//! - [`validate`]: checking a job against the catalog, producing a [`validate::ValidatedJob`];
//! - [`config`]: the typed configuration schema and its validation into a [`catalog::Catalog`];
//! - [`controls`]: live control of a target (pause, lowered caps) and the effective throttle;
//! - [`receipt`]: the signed erasure receipt's document and the bytes its signature covers;
//! - [`restore`]: which finished jobs a restore job can undo, and the restore job's request;
//! - [`retention`]: retention policies and the windows of their schedules;
//! - [`throttle`]: pacing decisions (pause, rows-per-second budget, adaptive batch size);
//! - [`health`]: throttling from the database's health: signals, limits, go/pause/stop;
//! - [`plan_guard`]: refusing a job whose plan would read far more rows than it removes;
//! - [`strategy`]: key order or physical order, chosen from the database's estimate;
//! - [`sql`]: the SQL text and bound parameters of every statement family, per backend;
//! - [`views`]: how jobs and audit entries are shown (API bodies, CLI output, client crate).
//!
//! Architecture invariant: this crate performs no I/O and depends on no database, queue or
//! runtime crate. Its functions fail only through validation errors. Time is an input (`as_of`),
//! never read from the clock here. `cron` is pure too (expression parsing and tick arithmetic).

pub mod audit_chain;
pub mod catalog;
pub mod config;
pub mod controls;
pub mod graph;
pub mod health;
pub mod holds;
pub mod job;
pub mod lifecycle;
pub mod plan_guard;
#[cfg(test)]
mod properties;
pub mod receipt;
pub mod restore;
pub mod retention;
pub mod span;
pub mod sql;
#[cfg(test)]
mod sql_tokens;
pub mod strategy;
pub mod throttle;
pub mod validate;
pub mod value;
pub mod views;
