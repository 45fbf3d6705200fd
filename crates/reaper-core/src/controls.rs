//! Live control of a target (issue 16): what an operator may change on a target while its jobs
//! run — pause it, lower its rows-per-second cap, narrow its batch sizes, set its database-health
//! thresholds — how a change is validated against the catalog, and the effective throttle a
//! batch runs under.
//!
//! An override may only make a target gentler than its configuration: a cap or a largest batch
//! at most the configured one (a target without a configured cap may be given one), never above.
//! The configuration stays the ceiling a deploy review approved; a live change cannot raise it.
//!
//! Pure: the engine stores controls (`reaper_target_controls`), re-reads them and applies
//! [`Effective`] to every batch that starts afterwards; this module only decides.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::catalog::{Catalog, Target};
use crate::throttle::{Adaptive, Throttle};
use crate::validate::{FieldError, ValidationError};

/// The throttle values an operator set on a target; `None` keeps the configured value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThrottleOverride {
    /// Rows per second from this target, all daemons together (at most the configured cap).
    pub max_rows_per_second: Option<u32>,
    /// The largest batch (at most the target's `max_batch_size`); a job asking for more runs
    /// batches of this size.
    pub max_batch_size: Option<u32>,
    /// The smallest adaptive batch (targets with `target_batch_duration` only).
    pub min_batch_size: Option<u32>,
    /// The duration an adaptive batch aims at, in milliseconds (targets with
    /// `target_batch_duration` only).
    pub target_batch_duration_ms: Option<u32>,
    /// Database-health thresholds by name (replica lag, load, lock waits), each a number above
    /// zero; stored as given and applied by the health checks that know the names.
    pub thresholds: Option<BTreeMap<String, f64>>,
}

impl ThrottleOverride {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A change to a target's override (`PATCH /v1/targets/{name}/throttle`, `reaper target set`):
/// an absent field keeps its value, `null` clears it (back to the configured value), a value
/// sets it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottlePatch {
    /// See [`ThrottleOverride::max_rows_per_second`].
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_rows_per_second: Option<Option<i64>>,
    /// See [`ThrottleOverride::max_batch_size`].
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_batch_size: Option<Option<i64>>,
    /// See [`ThrottleOverride::min_batch_size`].
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_batch_size: Option<Option<i64>>,
    /// See [`ThrottleOverride::target_batch_duration_ms`].
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_batch_duration_ms: Option<Option<i64>>,
    /// See [`ThrottleOverride::thresholds`]; replaces the whole map.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub thresholds: Option<Option<BTreeMap<String, f64>>>,
    /// Who asks (recorded with the change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Why (recorded with the change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A field that is present: `Some(None)` for `null`, `Some(Some(v))` for a value (absent fields
/// stay `None` through `#[serde(default)]`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl ThrottlePatch {
    /// Whether the patch changes no throttle value.
    pub fn is_empty(&self) -> bool {
        self.max_rows_per_second.is_none()
            && self.max_batch_size.is_none()
            && self.min_batch_size.is_none()
            && self.target_batch_duration_ms.is_none()
            && self.thresholds.is_none()
    }
}

/// A target's live control as stored: paused or not, the override, and the last change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetControl {
    /// The catalog target.
    pub target: String,
    /// No batch of this target starts while set.
    pub paused: bool,
    /// The values that replace the configured ones.
    #[serde(rename = "override")]
    pub overrides: ThrottleOverride,
    /// Who made the last change.
    pub changed_by: String,
    /// When.
    pub changed_at: DateTime<Utc>,
    /// Why, as they said.
    pub reason: Option<String>,
}

/// What an operator did to a target, as recorded in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    /// Paused it.
    Pause,
    /// Resumed it.
    Resume,
    /// Changed its override.
    Set,
    /// Cleared its override.
    Clear,
}

impl ControlAction {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Set => "set",
            ControlAction::Clear => "clear",
        }
    }
}

/// One recorded change of a target's control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlChange {
    /// The catalog target.
    pub target: String,
    /// `pause`, `resume`, `set` or `clear`.
    pub action: String,
    /// The control after the change: `paused` and the override, as JSON.
    pub after: serde_json::Value,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// The throttle a batch runs under: the configured one with the operator's control applied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Effective {
    /// Paused by an operator: no batch starts.
    pub paused: bool,
    /// The rows-per-second cap, all daemons together.
    pub max_rows_per_second: Option<u32>,
    /// Adaptive sizing, with the override's bounds and target.
    pub adaptive: Option<Adaptive>,
    /// No batch larger than this.
    pub batch_cap: Option<u32>,
    /// The operator's live database-health thresholds ([`crate::health::Rules::under`]).
    pub thresholds: BTreeMap<String, f64>,
}

impl Effective {
    /// The configured `throttle` (of the job's target, as the job adjusted it) under `control`.
    /// Overrides only lower: a value above the configured one (a catalog changed under a stored
    /// control) is held to the configured one.
    pub fn of(throttle: &Throttle, control: Option<&TargetControl>) -> Self {
        let Some(control) = control else {
            return Self {
                paused: false,
                max_rows_per_second: throttle.max_rows_per_second,
                adaptive: throttle.adaptive,
                batch_cap: None,
                thresholds: BTreeMap::new(),
            };
        };
        let o = &control.overrides;
        let max_rows_per_second = match (throttle.max_rows_per_second, o.max_rows_per_second) {
            (Some(configured), Some(set)) => Some(set.min(configured)),
            (configured, set) => set.or(configured),
        };
        let adaptive = throttle.adaptive.map(|configured| {
            let max = o
                .max_batch_size
                .map_or(configured.max, |cap| cap.min(configured.max));
            Adaptive {
                target: o
                    .target_batch_duration_ms
                    .map_or(configured.target, |ms| Duration::from_millis(u64::from(ms))),
                min: o.min_batch_size.unwrap_or(configured.min).min(max).max(1),
                max,
            }
        });
        Self {
            paused: control.paused,
            max_rows_per_second,
            adaptive,
            batch_cap: o.max_batch_size,
            thresholds: o.thresholds.clone().unwrap_or_default(),
        }
    }
}

/// `override` after `patch`, checked against `target`'s configuration and the worker lease (a
/// cap so low that one batch would wait more than half a lease is refused, as in the
/// configuration). The errors name the field.
pub fn apply_patch(
    catalog: &Catalog,
    target_name: &str,
    current: &ThrottleOverride,
    patch: &ThrottlePatch,
    lease: Duration,
) -> Result<ThrottleOverride, ValidationError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| errors.push(FieldError::new(field, message));
    let Some(target) = catalog.get(target_name) else {
        fail(
            "target",
            crate::validate::unknown_target(catalog, target_name),
        );
        return Err(ValidationError { errors });
    };
    if patch.is_empty() {
        fail(
            "throttle",
            "give at least one of max_rows_per_second, max_batch_size, min_batch_size, \
             target_batch_duration_ms, thresholds (null clears one)"
                .into(),
        );
        return Err(ValidationError { errors });
    }
    let mut next = current.clone();
    let mut number = |field: &str, given: Option<Option<i64>>, keep: Option<u32>| match given {
        None => keep,
        Some(None) => None,
        Some(Some(value)) => match u32::try_from(value) {
            Ok(value) if value >= 1 => Some(value),
            _ => {
                fail(
                    field,
                    format!("{value} is not allowed; it must be a whole number from 1"),
                );
                keep
            }
        },
    };
    next.max_rows_per_second = number(
        "max_rows_per_second",
        patch.max_rows_per_second,
        next.max_rows_per_second,
    );
    next.max_batch_size = number("max_batch_size", patch.max_batch_size, next.max_batch_size);
    next.min_batch_size = number("min_batch_size", patch.min_batch_size, next.min_batch_size);
    next.target_batch_duration_ms = number(
        "target_batch_duration_ms",
        patch.target_batch_duration_ms,
        next.target_batch_duration_ms,
    );
    if let Some(thresholds) = &patch.thresholds {
        next.thresholds = thresholds.clone();
    }
    errors.extend(check_override(target, &next, lease));
    if errors.is_empty() {
        Ok(next)
    } else {
        Err(ValidationError { errors })
    }
}

/// What is wrong with `o` on `target`: values above the configuration, bounds that cross,
/// adaptive values on a target without adaptive sizing, thresholds that are not above zero.
fn check_override(target: &Target, o: &ThrottleOverride, lease: Duration) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| errors.push(FieldError::new(field, message));
    let configured = &target.throttle;
    if let (Some(set), Some(cap)) = (o.max_rows_per_second, configured.max_rows_per_second)
        && set > cap
    {
        fail(
            "max_rows_per_second",
            format!(
                "{set} is above target `{}`'s configured cap ({cap}); a live change may only \
                 lower it (raise it in the configuration)",
                target.name
            ),
        );
    }
    if let Some(set) = o.max_batch_size
        && set > target.max_batch_size
    {
        fail(
            "max_batch_size",
            format!(
                "{set} is above target `{}`'s configured max_batch_size ({}); a live change may \
                 only lower it",
                target.name, target.max_batch_size
            ),
        );
    }
    if let Some(rate) = o.max_rows_per_second {
        let largest = o.max_batch_size.unwrap_or(target.max_batch_size);
        let longest_wait = f64::from(largest) / f64::from(rate.max(1));
        if longest_wait * 2.0 >= lease.as_secs_f64() {
            fail(
                "max_rows_per_second",
                format!(
                    "{rate} is too low: one batch of {largest} rows would wait {longest_wait:.1}s, \
                     more than half of worker.lease ({}s); lower max_batch_size with it, or pause \
                     the target",
                    lease.as_secs()
                ),
            );
        }
    }
    if o.min_batch_size.is_some() || o.target_batch_duration_ms.is_some() {
        match configured.adaptive {
            None => fail(
                if o.min_batch_size.is_some() {
                    "min_batch_size"
                } else {
                    "target_batch_duration_ms"
                },
                format!(
                    "target `{}` has no adaptive batch size (target_batch_duration); only \
                     max_rows_per_second, max_batch_size and thresholds apply",
                    target.name
                ),
            ),
            Some(adaptive) => {
                let max = o.max_batch_size.unwrap_or(adaptive.max);
                if let Some(min) = o.min_batch_size
                    && min > max
                {
                    fail(
                        "min_batch_size",
                        format!("{min} is above the largest batch ({max})"),
                    );
                }
            }
        }
    }
    for (name, value) in o.thresholds.iter().flatten() {
        if !crate::health::THRESHOLD_NAMES.contains(&name.as_str()) {
            fail(
                &format!("thresholds.{name}"),
                format!(
                    "unknown threshold; expected one of {}",
                    crate::health::THRESHOLD_NAMES.join(", ")
                ),
            );
        } else if !(value.is_finite() && *value > 0.0) {
            fail(
                &format!("thresholds.{name}"),
                format!("{value} is not allowed; a threshold is a number above 0"),
            );
        }
    }
    errors
}

/// `target` must be in the catalog (pause, resume and clear name it).
pub fn check_target(catalog: &Catalog, target: &str) -> Result<(), ValidationError> {
    match catalog.get(target) {
        Some(_) => Ok(()),
        None => Err(ValidationError::of(
            "target",
            crate::validate::unknown_target(catalog, target),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(throttle: Throttle) -> Catalog {
        let mut target =
            crate::sql::test_support::job(&serde_json::json!({"all_rows": true})).target;
        target.max_batch_size = 10_000;
        target.throttle = throttle;
        Catalog::new([target])
    }

    fn capped() -> Throttle {
        Throttle {
            max_rows_per_second: Some(1_000),
            adaptive: Some(Adaptive {
                target: Duration::from_millis(100),
                min: 100,
                max: 10_000,
            }),
            ..Throttle::default()
        }
    }

    fn patch(json: serde_json::Value) -> ThrottlePatch {
        serde_json::from_value(json).unwrap()
    }

    const LEASE: Duration = Duration::from_secs(60);

    #[test]
    fn a_patch_sets_keeps_and_clears_fields() {
        let catalog = catalog(capped());
        let set = apply_patch(
            &catalog,
            "events",
            &ThrottleOverride::default(),
            &patch(
                serde_json::json!({"max_rows_per_second": 500, "max_batch_size": 200,
                "thresholds": {"replica_lag.pause_above": 5}}),
            ),
            LEASE,
        )
        .unwrap();
        assert_eq!(set.max_rows_per_second, Some(500));
        assert_eq!(set.max_batch_size, Some(200));
        let cleared = apply_patch(
            &catalog,
            "events",
            &set,
            &patch(serde_json::json!({"max_rows_per_second": null})),
            LEASE,
        )
        .unwrap();
        assert_eq!(cleared.max_rows_per_second, None);
        assert_eq!(cleared.max_batch_size, Some(200));
        assert_eq!(
            cleared.thresholds.unwrap()["replica_lag.pause_above"],
            5.0,
            "kept"
        );
    }

    #[test]
    fn overrides_may_only_lower_and_must_be_positive() {
        let catalog = catalog(capped());
        let refused = |json| {
            apply_patch(
                &catalog,
                "events",
                &ThrottleOverride::default(),
                &patch(json),
                LEASE,
            )
            .unwrap_err()
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
        };
        let above = refused(serde_json::json!({"max_rows_per_second": 5_000}));
        assert!(
            above.contains(
                "max_rows_per_second: 5000 is above target `events`'s configured cap (1000)"
            ),
            "{above}"
        );
        let negative = refused(serde_json::json!({"max_rows_per_second": -5}));
        assert!(negative.contains("-5 is not allowed"), "{negative}");
        let batch = refused(serde_json::json!({"max_batch_size": 20_000}));
        assert!(
            batch.contains("above target `events`'s configured max_batch_size (10000)"),
            "{batch}"
        );
        let threshold = refused(serde_json::json!({"thresholds": {"load.pause_above": 0}}));
        assert!(
            threshold.contains("thresholds.load.pause_above: 0 is not allowed"),
            "{threshold}"
        );
        let crossed = refused(serde_json::json!({"max_batch_size": 50, "min_batch_size": 80}));
        assert!(
            crossed.contains("min_batch_size: 80 is above the largest batch (50)"),
            "{crossed}"
        );
        let slow = refused(serde_json::json!({"max_rows_per_second": 10}));
        assert!(slow.contains("is too low"), "{slow}");
        let empty = refused(serde_json::json!({"reason": "x"}));
        assert!(empty.contains("give at least one"), "{empty}");
        let unknown = apply_patch(
            &catalog,
            "nope",
            &ThrottleOverride::default(),
            &patch(serde_json::json!({"max_rows_per_second": 5})),
            LEASE,
        )
        .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown target `nope`"),
            "{unknown}"
        );
    }

    #[test]
    fn a_target_without_a_cap_may_be_given_one_but_not_adaptive_values() {
        let catalog = catalog(Throttle::default());
        let set = apply_patch(
            &catalog,
            "events",
            &ThrottleOverride::default(),
            &patch(serde_json::json!({"max_rows_per_second": 100_000})),
            LEASE,
        )
        .unwrap();
        assert_eq!(set.max_rows_per_second, Some(100_000));
        let error = apply_patch(
            &catalog,
            "events",
            &ThrottleOverride::default(),
            &patch(serde_json::json!({"target_batch_duration_ms": 50})),
            LEASE,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("has no adaptive batch size"),
            "{error}"
        );
    }

    #[test]
    fn the_effective_throttle_applies_the_override_and_never_exceeds_the_configuration() {
        let throttle = capped();
        assert_eq!(
            Effective::of(&throttle, None).max_rows_per_second,
            Some(1_000)
        );
        let control = TargetControl {
            target: "events".into(),
            paused: true,
            overrides: ThrottleOverride {
                max_rows_per_second: Some(5_000),
                max_batch_size: Some(500),
                min_batch_size: Some(900),
                target_batch_duration_ms: Some(40),
                thresholds: None,
            },
            changed_by: "ann".into(),
            changed_at: DateTime::UNIX_EPOCH,
            reason: None,
        };
        let effective = Effective::of(&throttle, Some(&control));
        assert!(effective.paused);
        assert_eq!(effective.max_rows_per_second, Some(1_000));
        assert_eq!(effective.batch_cap, Some(500));
        assert_eq!(
            effective.adaptive,
            Some(Adaptive {
                target: Duration::from_millis(40),
                min: 500,
                max: 500
            })
        );
    }
}
