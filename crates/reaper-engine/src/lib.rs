//! reaper's deletion engine.
//!
//! Owns everything that talks to the target database: connecting ([`database`]), reaper's own
//! tables ([`migration`]), the job ledger ([`ledger`]), checking the catalog against the real
//! schema ([`schema_check`]) and the relations against its foreign keys and indexes ([`graph_check`]), one batch transaction ([`batch`], and over heap-block ranges on PostgreSQL, [`physical`]) and running a job batch by batch
//! under its lease ([`runner`]) after the plan guard's look at its first batch ([`plan_check`]) at the pace of its target's throttle ([`pacing`]) under the operators' live control ([`controls`]) and the database's health ([`health`]), and what it measures ([`instruments`]).
//!
//! It must not know about queues, HTTP, signals or configuration files: the binary wires those
//! (its metric list names the binary's queue and producer series too, see [`instruments`]).
//! SQL text comes from `reaper_core::sql`; this crate only executes it — except the DDL of
//! reaper's own tables that sea-orm-migration's schema builder renders ([`migration`]).

pub mod archive;
pub mod audit_chain;
pub mod batch;
pub mod controls;
pub mod database;
pub mod error;
pub mod graph_check;
pub mod graph_run;
pub mod health;
pub mod holds;
pub mod instruments;
pub mod ledger;
pub mod migration;
pub mod pacing;
pub mod physical;
pub mod plan_check;
pub mod receipt;
pub mod runner;
pub mod schema_check;

pub use database::Database;
pub use error::{EngineError, ErrorClass};
