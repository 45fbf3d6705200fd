//! Legal holds: rows no batch may remove while a hold on them is active.
//!
//! A hold names a target and either keys or a filter in the jobs' filter language, with a
//! reason, who placed it, when, and an optional expiry. It is stored in `reaper_holds` (in the
//! target database, beside the ledger) and read by every batch transaction as its first
//! statement; the batch's own statement then leaves the held rows in place and counts them.
//!
//! **When a hold takes effect.** For every batch transaction that begins after the hold's
//! `INSERT` committed: the batch reads the active holds inside its transaction, before it
//! selects or removes any row (READ COMMITTED on PostgreSQL and MySQL sees every commit made
//! before the read; SQLite's `BEGIN IMMEDIATE` serializes the batch after the hold's write). A
//! batch that had already read the holds when the hold committed finishes under the holds it
//! read. A release (or an expiry passing) takes effect the same way.
//!
//! **Fail closed.** A batch that cannot read the holds (table missing, permission refused) or
//! finds a stored hold it cannot apply (its filter names a column the catalog no longer allows)
//! fails before it removes anything.
//!
//! **Across relations** a hold keeps more than its rows: what hangs off a held row (its
//! subtree in the job's plan) and what a held row hangs off (its ancestors, whatever the
//! relations' actions: the held row is left as it is, so it still refers to its parent). The
//! conditions are written by [`crate::sql::graph`].
//!
//! This module owns the wire format of a hold, its validation against the catalog and the
//! compiled form the statements exclude. It does no I/O; SQL lives in [`crate::sql::holds`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Target};
use crate::job::Filter;
use crate::validate::{FieldError, Predicate, ValidationError, filter_predicates};
use crate::value::KeyValue;

/// The most keys one hold may list (one statement binds them all).
pub const MAX_HOLD_KEYS: usize = 1_000;

/// A hold as a person or service places it (API body, CLI flags, client).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// The catalog target whose rows are held.
    pub target: String,
    /// Primary keys of the held rows (numbers for integer keys, strings otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<serde_json::Value>>,
    /// Or: every row this filter matches (same language as jobs; `older_than` is taken from the
    /// time the hold is placed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Why the rows are held (case, court order).
    pub reason: String,
    /// Who placed it.
    pub placed_by: String,
    /// When the hold ends by itself; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A hold as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    /// Hold id.
    pub id: String,
    /// Target name.
    pub target: String,
    /// Held keys, when the hold is by keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<KeyValue>>,
    /// Held filter, when the hold is by filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Why.
    pub reason: String,
    /// Who placed it.
    pub placed_by: String,
    /// When it was placed (also the reference time of an `older_than` condition).
    pub placed_at: DateTime<Utc>,
    /// When it ends by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
    /// Who released it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
}

impl Hold {
    /// Whether the hold protects its rows at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.released_at.is_none() && self.expires_at.is_none_or(|end| end > now)
    }
}

/// Checks a hold request against the catalog and returns the hold to store, placed at `now`.
/// Every problem is reported with its field, as a job's are.
pub fn validate_hold(
    request: &HoldRequest,
    catalog: &Catalog,
    id: String,
    now: DateTime<Utc>,
) -> Result<Hold, ValidationError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| errors.push(FieldError::new(field, message));
    for (field, text) in [
        ("target", &request.target),
        ("reason", &request.reason),
        ("placed_by", &request.placed_by),
    ] {
        if text.trim().is_empty() || text.contains('\0') {
            fail(
                field,
                "must be non-empty text without NUL characters".into(),
            );
        }
    }
    if request.expires_at.is_some_and(|end| end <= now) {
        fail("expires_at", "is in the past; a hold must end later".into());
    }
    let Some(target) = catalog.get(&request.target) else {
        fail(
            "target",
            crate::validate::unknown_target(catalog, &request.target),
        );
        return Err(ValidationError { errors });
    };
    let mut keys = None;
    match (&request.keys, &request.filter) {
        (Some(_), Some(_)) | (None, None) => fail(
            "keys",
            "give either keys or a filter (one hold holds one of the two)".into(),
        ),
        (Some(given), None) => match typed_keys(given, target) {
            Ok(typed) => keys = Some(typed),
            Err(message) => fail("keys", message),
        },
        (None, Some(filter)) => {
            if filter.is_empty() {
                fail(
                    "filter",
                    "is empty; hold the whole table with a filter that says so (e.g. `not_null` on its key column)"
                        .into(),
                );
            }
            if let Err(problems) = filter_predicates(filter, target, now) {
                errors.extend(problems);
            }
        }
    }
    if !errors.is_empty() {
        return Err(ValidationError { errors });
    }
    Ok(Hold {
        id,
        target: target.name.clone(),
        keys,
        filter: request.filter.clone(),
        reason: request.reason.clone(),
        placed_by: request.placed_by.clone(),
        placed_at: now,
        expires_at: request.expires_at,
        released_at: None,
        released_by: None,
    })
}

fn typed_keys(given: &[serde_json::Value], target: &Target) -> Result<Vec<KeyValue>, String> {
    if given.is_empty() || given.len() > MAX_HOLD_KEYS {
        return Err(format!(
            "takes 1 to {MAX_HOLD_KEYS} keys, got {}",
            given.len()
        ));
    }
    given
        .iter()
        .map(|value| {
            let text = match value {
                serde_json::Value::Number(number) => number.to_string(),
                serde_json::Value::String(text) => text.clone(),
                other => return Err(format!("`{other}` is not a key")),
            };
            target.key_type.parse_key(&text).ok_or_else(|| {
                format!(
                    "`{text}` is not a {} key of target `{}`",
                    target.key_type.as_str(),
                    target.name
                )
            })
        })
        .collect()
}

/// One active hold, compiled for the statements: held keys or held predicates.
#[derive(Debug, Clone, PartialEq)]
pub enum HeldRows {
    /// The rows with these primary keys.
    Keys(Vec<KeyValue>),
    /// The rows every one of these predicates is true for.
    Filter(Vec<Predicate>),
}

/// The holds a batch applies, per target name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActiveHolds {
    by_target: BTreeMap<String, Vec<HeldRows>>,
}

impl ActiveHolds {
    /// The compiled holds on `target` (empty: nothing held).
    pub fn on(&self, target: &str) -> &[HeldRows] {
        self.by_target.get(target).map_or(&[], Vec::as_slice)
    }

    /// Whether any hold is active on any target.
    pub fn is_empty(&self) -> bool {
        self.by_target.is_empty()
    }
}

/// A stored hold that cannot be applied; the batch that read it fails and removes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "legal hold {id} on `{target}` cannot be applied ({problem}); the batch was refused and \
     nothing was deleted: release the hold or fix the catalog"
)]
pub struct UnreadableHold {
    /// Hold id.
    pub id: String,
    /// Target name.
    pub target: String,
    /// What is wrong.
    pub problem: String,
}

/// Compiles the stored active holds on `targets` (a batch's tables, as its job validated them).
/// Fails closed: one hold that does not apply (a target the batch does not know, a filter
/// column no longer filterable) fails the whole batch.
pub fn compile(holds: &[Hold], targets: &[&Target]) -> Result<ActiveHolds, UnreadableHold> {
    let mut by_target: BTreeMap<String, Vec<HeldRows>> = BTreeMap::new();
    for hold in holds {
        let unreadable = |problem: String| UnreadableHold {
            id: hold.id.clone(),
            target: hold.target.clone(),
            problem,
        };
        let target = targets
            .iter()
            .find(|target| target.name == hold.target)
            .ok_or_else(|| unreadable("its target is not one of the batch's tables".into()))?;
        let rows = match (&hold.keys, &hold.filter) {
            (Some(keys), None) if !keys.is_empty() => HeldRows::Keys(keys.clone()),
            (None, Some(filter)) if !filter.is_empty() => HeldRows::Filter(
                filter_predicates(filter, target, hold.placed_at).map_err(|problems| {
                    unreadable(
                        problems
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; "),
                    )
                })?,
            ),
            _ => return Err(unreadable("it holds neither keys nor a filter".into())),
        };
        by_target.entry(hold.target.clone()).or_default().push(rows);
    }
    Ok(ActiveHolds { by_target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::test_support::job;

    fn catalog() -> Catalog {
        Catalog::new([job(&serde_json::json!({"all_rows": true})).target])
    }

    fn at() -> DateTime<Utc> {
        crate::sql::test_support::at()
    }

    fn request(json: &serde_json::Value) -> HoldRequest {
        let mut base =
            serde_json::json!({"target": "events", "reason": "case 7", "placed_by": "legal"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn a_hold_holds_keys_or_a_filter_never_both_nor_neither() {
        let both = request(&serde_json::json!({"keys": [1],
            "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 7}]}}));
        let neither = request(&serde_json::json!({}));
        for bad in [both, neither] {
            let error = validate_hold(&bad, &catalog(), "h".into(), at()).unwrap_err();
            assert_eq!(error.errors[0].field, "keys");
        }
        let keys = validate_hold(
            &request(&serde_json::json!({"keys": [1, "2"]})),
            &catalog(),
            "h".into(),
            at(),
        )
        .unwrap();
        assert_eq!(keys.keys, Some(vec![KeyValue::Int(1), KeyValue::Int(2)]));
    }

    #[test]
    fn bad_keys_filters_and_expiries_name_their_field() {
        let error = validate_hold(
            &request(&serde_json::json!({"keys": ["x"], "expires_at": "2020-01-01T00:00:00Z"})),
            &catalog(),
            "h".into(),
            at(),
        )
        .unwrap_err();
        let fields: Vec<&str> = error.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["expires_at", "keys"]);
        let error = validate_hold(
            &request(&serde_json::json!({"filter": {"all": [{"column": "secret", "op": "eq", "value": 1}]}})),
            &catalog(),
            "h".into(),
            at(),
        )
        .unwrap_err();
        assert_eq!(error.errors[0].field, "filter.all[0].column");
    }

    #[test]
    fn compiling_fails_closed_on_a_hold_the_catalog_no_longer_allows() {
        let mut hold = validate_hold(
            &request(&serde_json::json!({"filter": {"all": [{"column": "kind", "op": "eq", "value": "a"}]}})),
            &catalog(),
            "h1".into(),
            at(),
        )
        .unwrap();
        let catalog = catalog();
        let events = catalog.get("events").unwrap();
        let active = compile(std::slice::from_ref(&hold), &[events]).unwrap();
        assert_eq!(active.on("events").len(), 1);
        assert!(active.on("other").is_empty());
        hold.filter = Some(
            serde_json::from_value(
                serde_json::json!({"all": [{"column": "dropped", "op": "eq", "value": 1}]}),
            )
            .unwrap(),
        );
        let error = compile(&[hold], &[events]).unwrap_err();
        assert!(error.to_string().contains("nothing was deleted"), "{error}");
    }

    #[test]
    fn a_released_or_expired_hold_is_inactive() {
        let mut hold = validate_hold(
            &request(&serde_json::json!({"keys": [1], "expires_at": "2026-12-01T00:00:00Z"})),
            &catalog(),
            "h".into(),
            at(),
        )
        .unwrap();
        assert!(hold.is_active(at()));
        assert!(!hold.is_active(hold.expires_at.unwrap()));
        hold.released_at = Some(at());
        assert!(!hold.is_active(at()));
    }
}
