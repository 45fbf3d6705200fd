//! Property tests (proptest) for what has laws: key encoding round trips on every backend, the
//! keyset walk never skipping or repeating a key, retention windows (each instant in exactly
//! one), throttle arithmetic, and the planner (a statement holds no value, only placeholders,
//! and its identifiers are only catalog names).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use crate::catalog::{Catalog, ColumnType, KeyType, Mode, Target};
use crate::job::JobRequest;
use crate::lifecycle::JobState;
use crate::retention::Policy;
use crate::span::Span;
use crate::sql::{self, Backend, RowLocking, SqlWriter, Statement, key_param};
use crate::throttle::{Adaptive, advance, budget_correction, budget_cost, budget_wait};
use crate::validate::{ValidatedJob, validate};
use crate::value::{KeyValue, SqlValue};

const BACKENDS: [Backend; 3] = [Backend::Postgres, Backend::MySql, Backend::Sqlite];

/// A key of `key_type`, as the engine holds it (uuids hyphenated lowercase).
fn key(key_type: KeyType) -> BoxedStrategy<KeyValue> {
    match key_type {
        KeyType::Int => any::<i64>().prop_map(KeyValue::Int).boxed(),
        KeyType::Text => any::<String>()
            .prop_filter("no NUL", |text| !text.contains('\0'))
            .prop_map(KeyValue::Text)
            .boxed(),
        KeyType::Uuid => any::<u128>()
            .prop_map(|bits| KeyValue::Text(uuid::Uuid::from_u128(bits).hyphenated().to_string()))
            .boxed(),
    }
}

fn key_type() -> impl Strategy<Value = KeyType> {
    prop_oneof![Just(KeyType::Int), Just(KeyType::Text), Just(KeyType::Uuid)]
}

/// The text a backend gives back for the bound key (`::text`, `CAST(… AS CHAR)`, SQLite's
/// text): integers in decimal, uuids hyphenated lowercase, text as it is.
fn stored_text(value: &SqlValue) -> String {
    match value {
        SqlValue::Int(value) => value.to_string(),
        SqlValue::Text(text) => text.clone(),
        SqlValue::Uuid(id) => id.hyphenated().to_string(),
        other => panic!("a key bound as {other:?}"),
    }
}

/// What a backend binds for `key` (through the writer, which encodes per backend).
fn bound(backend: Backend, key_type: KeyType, key: &KeyValue) -> SqlValue {
    let mut w = SqlWriter::new(backend);
    w.param(key_param(key_type, key));
    w.finish().params()[0].clone()
}

proptest! {
    /// A checkpoint stored as text and a key bound and read back decode to the same key, on
    /// every backend; the JSON form (audit key lists) round-trips too.
    #[test]
    fn keys_round_trip_through_checkpoints_parameters_and_json(
        (key_type, key) in key_type().prop_flat_map(|t| (Just(t), key(t)))
    ) {
        prop_assert_eq!(key_type.parse_key(&key.to_text()), Some(key.clone()));
        for backend in BACKENDS {
            let text = stored_text(&bound(backend, key_type, &key));
            prop_assert_eq!(key_type.parse_key(&text), Some(key.clone()), "{}", backend);
        }
        let json = serde_json::to_string(&key).unwrap();
        // Text keys that look like numbers come back as text only because they are strings.
        let back: KeyValue = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, key);
    }

    /// A uuid written in any case is the same key once parsed.
    #[test]
    fn uuid_checkpoints_are_case_insensitive(bits in any::<u128>()) {
        let id = uuid::Uuid::from_u128(bits);
        let lower = KeyType::Uuid.parse_key(&id.hyphenated().to_string());
        let upper = KeyType::Uuid.parse_key(&id.hyphenated().to_string().to_uppercase());
        prop_assert_eq!(&lower, &upper);
        prop_assert!(lower.is_some());
    }

    /// The keyset walk as the batches do it — the keys after the checkpoint in key order, at
    /// most `limit`, the checkpoint then stored as text and parsed back — visits every key once,
    /// in order, whatever the keys and the limits.
    #[test]
    fn the_keyset_walk_never_skips_or_repeats_a_key(
        (key_type, keys) in key_type().prop_flat_map(|t| (Just(t), prop::collection::btree_set(key(t), 0..200))),
        limits in prop::collection::vec(1usize..50, 1..20),
    ) {
        let mut visited = Vec::new();
        let mut checkpoint: Option<String> = None;
        for step in 0.. {
            let after = checkpoint.as_deref().map(|text| key_type.parse_key(text).unwrap());
            let window: Vec<&KeyValue> = keys
                .iter()
                .filter(|key| after.as_ref().is_none_or(|after| *key > after))
                .take(limits[step % limits.len()])
                .collect();
            let Some(last) = window.last() else { break };
            checkpoint = Some(last.to_text());
            visited.extend(window.into_iter().cloned());
        }
        prop_assert_eq!(visited, keys.into_iter().collect::<Vec<_>>());
    }
}

/// Schedules of several shapes: every N seconds or minutes, hourly, daily, weekly.
fn schedule() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u32..30).prop_map(|n| format!("*/{n} * * * * *")),
        (1u32..30).prop_map(|n| format!("0 */{n} * * * *")),
        (0u32..60).prop_map(|m| format!("{m} * * * *")),
        (0u32..60, 0u32..24).prop_map(|(m, h)| format!("{m} {h} * * *")),
        (0u32..24, 0u32..7).prop_map(|(h, d)| format!("0 {h} * * {d}")),
        Just("0 3 1 * *".to_owned()),
    ]
}

fn policy(schedule: &str) -> Policy {
    Policy::new(
        "p".into(),
        "events".into(),
        "created_at".into(),
        Span::from_secs(86_400),
        None,
        schedule.into(),
        None,
        Vec::new(),
        None,
        true,
    )
    .unwrap()
}

/// An instant between 2020 and 2040, to the nanosecond.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (1_577_836_800i64..2_208_988_800, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

proptest! {
    /// Each instant lies in exactly one window: the latest tick at or before it, and the next
    /// tick after that window's start is after the instant. Windows move forward with time.
    #[test]
    fn each_instant_is_in_exactly_one_window(schedule in schedule(), now in instant(), later in 0i64..10_000_000) {
        let policy = policy(&schedule);
        let window = policy.latest_window(now).unwrap();
        prop_assert!(window <= now, "{} > {}", window, now);
        let next = policy.next_window(window).unwrap();
        prop_assert!(next > now, "{}: {} is in window {} and also in {}", schedule, now, window, next);
        prop_assert_eq!(policy.next_window(now), Some(next));
        // A tick is its own window.
        prop_assert_eq!(policy.latest_window(next), Some(next));
        let then = now + chrono::Duration::milliseconds(later);
        prop_assert!(policy.latest_window(then).unwrap() >= window);
        // The key names the window alone.
        prop_assert_eq!(policy.window_key(window), policy.window_key(policy.latest_window(window).unwrap()));
    }
}

fn adaptive() -> impl Strategy<Value = Adaptive> {
    (1u64..10_000, 1u32..5_000, 1u32..50_000).prop_map(|(ms, min, max)| Adaptive {
        target: Duration::from_millis(ms),
        min,
        max,
    })
}

proptest! {
    /// The next batch size: within the bounds (a size already below `min` may stay there), at
    /// most ×1.5 and at least ×0.5 of the last one (rounded), and never larger after a slower
    /// batch.
    #[test]
    fn the_adaptive_size_stays_in_bounds_and_steps_gently(
        adaptive in adaptive(),
        size in 1u32..100_000,
        elapsed_us in 0u64..100_000_000,
        slower_us in 0u64..100_000_000,
    ) {
        let elapsed = Duration::from_micros(elapsed_us);
        let next = adaptive.next_size(size, elapsed);
        let low = adaptive.min.min(size);
        let high = adaptive.max.max(adaptive.min);
        prop_assert!(next >= low && next <= high, "{} not in {}..={}", next, low, high);
        let grown = (f64::from(size) * 1.5).round() as u32;
        let shrunk = (f64::from(size) * 0.5).round() as u32;
        prop_assert!(next <= grown.max(low), "{} grew past ×1.5 of {}", next, size);
        prop_assert!(next >= shrunk.min(high), "{} shrank past ×0.5 of {}", next, size);
        let slower = adaptive.next_size(size, elapsed + Duration::from_micros(slower_us));
        prop_assert!(slower <= next, "slower batch {} > {}", slower, next);
    }

    /// The shared rate budget: batches that book before they run, start at their slot or late
    /// and give back what they did not use never run faster than the rate — each starts at
    /// least the rows of the one before over the rate after it (a microsecond of rounding).
    #[test]
    fn the_shared_rate_budget_never_runs_faster_than_the_rate(
        rate in 1u32..100_000,
        batches in prop::collection::vec(
            (1u64..10_000, 0u64..=100, 0i64..2_000_000, 0u64..50_000),
            1..50,
        ),
    ) {
        let (mut free_at, mut now, mut correction) = (0i64, 0i64, 0i64);
        let mut previous: Option<(i64, u64)> = None;
        for (booked, used_percent, gap_us, late_us) in batches {
            now += gap_us;
            let cost = budget_cost(booked, rate);
            free_at = advance(free_at, now, correction, cost);
            let slot = now + i64::try_from(budget_wait(free_at - now, cost).as_micros()).unwrap();
            prop_assert!(slot >= now);
            let start = slot + i64::try_from(late_us).unwrap();
            if let Some((before, rows)) = previous {
                let share = rows as f64 * 1e6 / f64::from(rate);
                prop_assert!(
                    (start - before) as f64 + 2.0 >= share,
                    "{} rows, then a start {}µs later", rows, start - before
                );
            }
            let used = booked * used_percent / 100;
            correction = budget_correction(booked, used, rate, Duration::from_micros(late_us));
            previous = Some((start, used));
            now = start;
        }
    }
}

/// Identifiers of the generated catalogs: any characters a configuration could hold,
/// quotes and backticks included, never the value marker `VAL`.
fn name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_\"`' .$?]{0,10}"
}

/// A target with generated names and columns of every type, and a valid job on it.
fn target_and_job() -> impl Strategy<Value = (Target, serde_json::Value)> {
    (
        prop::option::of(name()),
        name(),
        name(),
        prop::collection::btree_map(name(), 0usize..5, 1..6),
        name(),
        prop_oneof![Just(KeyType::Int), Just(KeyType::Text), Just(KeyType::Uuid)],
        any::<bool>(),
    )
        .prop_filter("distinct names", |(_, _, pk, columns, soft, _, _)| {
            !columns.contains_key(pk) && !columns.contains_key(soft) && pk != soft
        })
        .prop_flat_map(|(schema, table, pk, columns, soft, key_type, soft_mode)| {
            let types = [
                ColumnType::Int,
                ColumnType::Text,
                ColumnType::Bool,
                ColumnType::Uuid,
                ColumnType::Timestamp,
            ];
            let columns: BTreeMap<String, ColumnType> = columns
                .into_iter()
                .map(|(name, index)| (name, types[index]))
                .collect();
            let conditions: Vec<BoxedStrategy<serde_json::Value>> = columns
                .iter()
                .map(|(name, column_type)| condition(name.clone(), *column_type))
                .collect();
            let target = Target {
                name: "t".into(),
                schema,
                table,
                primary_key: pk,
                key_type,
                columns,
                default_mode: Mode::Hard,
                batch_size: 100,
                max_batch_size: 1_000,
                soft_delete_column: Some(soft),
                max_rows: 1_000_000,
                max_attempts: None,
                throttle: Default::default(),
            };
            (Just(target), conditions, Just(soft_mode))
        })
        .prop_map(|(target, conditions, soft_mode)| {
            let job = serde_json::json!({
                "target": "t",
                "filter": {"all": conditions},
                "mode": if soft_mode { "soft" } else { "hard" },
                "requested_by": "VALrequester",
                "reason": "VALreason",
            });
            (target, job)
        })
}

/// A valid condition on `column`, its values marked so the test can find them.
fn condition(column: String, column_type: ColumnType) -> BoxedStrategy<serde_json::Value> {
    let value: BoxedStrategy<serde_json::Value> = match column_type {
        ColumnType::Int => (1_000_000_000i64..i64::MAX)
            .prop_map(serde_json::Value::from)
            .boxed(),
        ColumnType::Text => "VAL[a-zA-Z0-9' ;\"`$?-]{0,12}"
            .prop_map(serde_json::Value::from)
            .boxed(),
        ColumnType::Bool => any::<bool>().prop_map(serde_json::Value::from).boxed(),
        ColumnType::Uuid => any::<u128>()
            .prop_map(|bits| serde_json::Value::from(uuid::Uuid::from_u128(bits).to_string()))
            .boxed(),
        ColumnType::Timestamp => (1_600_000_000i64..2_000_000_000)
            .prop_map(|secs| {
                serde_json::Value::from(
                    DateTime::from_timestamp(secs, 0)
                        .unwrap()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )
            })
            .boxed(),
    };
    let ops = match column_type {
        ColumnType::Timestamp => {
            vec![
                "eq",
                "ne",
                "lt",
                "le",
                "gt",
                "ge",
                "in",
                "is_null",
                "not_null",
                "older_than",
            ]
        }
        ColumnType::Bool => vec!["eq", "ne", "is_null", "not_null"],
        ColumnType::Uuid => vec!["eq", "ne", "in", "is_null", "not_null"],
        _ => vec![
            "eq", "ne", "lt", "le", "gt", "ge", "in", "is_null", "not_null",
        ],
    };
    (
        prop::sample::select(ops),
        prop::collection::vec(value, 1..4),
        1u32..400,
    )
        .prop_map(move |(op, values, days)| match op {
            "is_null" | "not_null" => serde_json::json!({"column": column, "op": op}),
            "in" => serde_json::json!({"column": column, "op": op, "value": values}),
            "older_than" => {
                serde_json::json!({"column": column, "op": op, "value": format!("{days}d")})
            }
            _ => serde_json::json!({"column": column, "op": op, "value": values[0]}),
        })
        .boxed()
}

/// [`crate::sql_tokens::tokens`] with `backend`'s quoting and placeholders.
fn tokens(backend: Backend, sql: &str) -> (Vec<String>, Vec<String>, usize) {
    match backend {
        Backend::Postgres => crate::sql_tokens::tokens(sql, '"', '$'),
        Backend::Sqlite => crate::sql_tokens::tokens(sql, '"', '?'),
        Backend::MySql => crate::sql_tokens::tokens(sql, '`', '?'),
    }
}

/// Every statement the planner makes for a job on `backend`.
fn statements(backend: Backend, job: &ValidatedJob, after: &KeyValue) -> Vec<Statement> {
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let mut all = vec![
        sql::select_keys(backend, job, Some(after), 100),
        sql::select_keys(backend, job, None, 100),
        sql::count_matching(backend, job, Some(1_000)),
        sql::count_matching(backend, job, None),
    ];
    match backend {
        Backend::Postgres => {
            for locking in [RowLocking::Direct, RowLocking::SkipLocked] {
                let ctx = sql::postgres::BatchContext {
                    job_id: "VALjob",
                    lease_token: "VALtoken",
                    now,
                    lease_until: now,
                    locking,
                    held: &[],
                    count_held: true,
                };
                all.push(sql::postgres::delete_batch(job, Some(after), 100, &ctx));
                all.push(sql::postgres::delete_batch(job, None, 100, &ctx));
            }
        }
        Backend::MySql => {
            for locking in [RowLocking::Direct, RowLocking::SkipLocked] {
                all.push(sql::mysql::lock_batch(job, Some(after), 100, locking, &[]));
            }
            all.push(sql::mysql::delete_window(job, Some(after), after, now, &[]));
            all.push(sql::mysql::delete_window(job, None, after, now, &[]));
            all.push(sql::mysql::delete_keys(
                job,
                std::slice::from_ref(after),
                now,
            ));
        }
        Backend::Sqlite => {
            all.push(sql::sqlite::delete_batch(job, Some(after), 100, now));
            all.push(sql::sqlite::delete_batch(job, None, 100, now));
        }
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// For any valid filter on any catalog: every value is a parameter — the statement's text
    /// holds none of them, and its placeholders are exactly its parameters; every quoted
    /// identifier is a name from the catalog; the only string literals are reaper's own fixed
    /// words.
    #[test]
    fn the_planner_binds_every_value_and_names_only_catalog_identifiers(
        (target, job) in target_and_job(),
        checkpoint in 1_000_000_000i64..i64::MAX,
        text_checkpoint in "VAL[a-z' ]{0,8}",
    ) {
        let catalog = Catalog::new([target.clone()]);
        let request: JobRequest = serde_json::from_value(job.clone()).unwrap();
        let as_of = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let job = validate(&request, &catalog, as_of)
            .unwrap_or_else(|error| panic!("{job}: {error:?}"));
        let after = match target.key_type {
            KeyType::Int => KeyValue::Int(checkpoint),
            KeyType::Text => KeyValue::Text(text_checkpoint),
            KeyType::Uuid => KeyValue::Text(uuid::Uuid::from_u128(checkpoint as u128).to_string()),
        };
        let mut names: BTreeSet<&str> = target.columns.keys().map(String::as_str).collect();
        names.insert(&target.table);
        names.insert(&target.primary_key);
        names.extend(target.schema.as_deref());
        names.extend(target.soft_delete_column.as_deref());
        let mut words: BTreeSet<&str> = JobState::ALL.iter().map(|state| state.as_str()).collect();
        words.insert("[]");
        for backend in BACKENDS {
            for statement in statements(backend, &job, &after) {
                let text = statement.sql();
                let (idents, literals, placeholders) = tokens(backend, text);
                prop_assert_eq!(placeholders, statement.params().len(), "{}", text);
                prop_assert!(idents.contains(&target.table), "no table in {}", text);
                for ident in &idents {
                    prop_assert!(names.contains(ident.as_str()), "identifier {:?} is not a catalog name: {}", ident, text);
                }
                for literal in &literals {
                    prop_assert!(words.contains(literal.as_str()), "literal {:?}: {}", literal, text);
                }
                prop_assert!(!text.contains("VAL"), "a text value in {}", text);
                for value in statement.params() {
                    let shown = match value {
                        SqlValue::Int(value) if *value >= 1_000_000_000 => value.to_string(),
                        SqlValue::Uuid(id) => id.to_string(),
                        SqlValue::Timestamp(at) => at.format("%Y-%m-%d").to_string(),
                        _ => continue,
                    };
                    prop_assert!(!text.contains(&shown), "value {} in {}", shown, text);
                }
            }
        }
    }
}

proptest! {
    /// The five-field form's weekdays are crontab's (0–7, 0 and 7 Sunday): a schedule on the
    /// days `from`-`to` ticks on those days and no others.
    #[test]
    fn five_field_weekdays_are_crontab_s(from in 0u32..=7, to in 0u32..=7, single in any::<bool>(), now in instant()) {
        use chrono::Datelike;
        let (field, days): (String, BTreeSet<u32>) = if single || from > to {
            (from.to_string(), BTreeSet::from([from % 7]))
        } else {
            (format!("{from}-{to}"), (from..=to).map(|day| day % 7).collect())
        };
        let policy = policy(&format!("30 3 * * {field}"));
        let mut seen = BTreeSet::new();
        for tick in policy.schedule().after(&now).take(20) {
            let weekday = tick.weekday().num_days_from_sunday();
            prop_assert!(days.contains(&weekday), "`{}` ticked on day {} at {}", field, weekday, tick);
            seen.insert(weekday);
        }
        prop_assert_eq!(seen, days);
    }
}
