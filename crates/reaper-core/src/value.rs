//! Typed values bound as SQL parameters, and primary-key values used as checkpoints.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A value bound as a statement parameter. Values never become part of SQL text.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// 64-bit signed integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Boolean.
    Bool(bool),
    /// UUID (bound natively on PostgreSQL, as text elsewhere: see the backend planners).
    Uuid(Uuid),
    /// An instant in UTC.
    Timestamp(DateTime<Utc>),
}

/// A primary-key value: what a checkpoint stores and what audit entries list.
///
/// Serialized as a plain JSON number (integer keys) or string (text and uuid keys), which is
/// also how audit entries store their key lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyValue {
    /// Integer key.
    Int(i64),
    /// Text or uuid key (uuids in their canonical hyphenated lowercase form).
    Text(String),
}

impl KeyValue {
    /// The key as stored in the ledger's `checkpoint` column and the audit's first/last key.
    pub fn to_text(&self) -> String {
        match self {
            KeyValue::Int(value) => value.to_string(),
            KeyValue::Text(value) => value.clone(),
        }
    }
}

impl std::fmt::Display for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}
