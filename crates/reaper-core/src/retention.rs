//! Retention policies: the rules operators declare (`[[retention]]` in config) and the pure
//! arithmetic of their schedules — which window a moment belongs to, when the next one starts,
//! and the one job each window turns into.
//!
//! A *window* is the span between two ticks of a policy's cron schedule, named by the tick that
//! opens it. Each window becomes at most one job, whose idempotency key
//! (`policy:NAME:WINDOW-START`) is derived from the window alone, so any number of daemons
//! ticking the same policy submit the same key and the ledger keeps one job. This module reads no
//! clock: `now` is always an argument.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::catalog::Mode;
use crate::job::{Condition, Filter, JobRequest, Op};
use crate::span::Span;

/// Who the audit log names as the requester of scheduled retention jobs.
pub const SCHEDULER: &str = "reaper-scheduler";

/// The prefix of every retention job's idempotency key; producers may not use it.
pub const KEY_PREFIX: &str = "policy:";

/// A validated retention policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Unique name; part of every key and metric label.
    pub name: String,
    /// The catalog target it purges.
    pub target: String,
    /// The timestamp column whose age decides.
    pub age_column: String,
    /// Rows whose `age_column` is older than this are removed.
    pub max_age: Span,
    /// `hard`, `soft` or `archive`; the target's default when absent.
    pub mode: Option<Mode>,
    /// The schedule as written.
    pub schedule_text: String,
    schedule: cron::Schedule,
    /// Rows per batch; the target's default when absent.
    pub batch_size: Option<u32>,
    /// Extra conditions, ANDed with the age condition.
    pub filter: Vec<Condition>,
    /// The most rows one run deletes; the rest waits for the next window.
    pub max_rows_per_run: Option<u64>,
    /// Disabled policies are validated and listed but never scheduled.
    pub enabled: bool,
}

/// Parses a cron expression: the classic five fields (`min hour day month weekday`, weekdays
/// numbered as crontab does: [`crontab_weekdays`]) or six and seven with seconds first and an
/// optional year, as apalis-cron schedules them (weekdays 1–7 from Sunday). UTC.
pub fn parse_schedule(text: &str) -> Result<cron::Schedule, String> {
    let fields = text.split_whitespace().count();
    let expression = match fields {
        5 => {
            let mut parts: Vec<&str> = text.split_whitespace().collect();
            let weekdays = crontab_weekdays(parts[4])
                .map_err(|error| format!("`{text}` is not a cron expression ({error})"))?;
            parts[4] = &weekdays;
            format!("0 {}", parts.join(" "))
        }
        6 | 7 => text.trim().to_owned(),
        _ => {
            return Err(format!(
                "`{text}` has {fields} fields; write 5 (`min hour day month weekday`), or 6 or 7 \
                 with seconds first (`sec min hour day month weekday [year]`)"
            ));
        }
    };
    cron::Schedule::from_str(&expression)
        .map_err(|error| format!("`{text}` is not a cron expression ({error})"))
}

/// The classic five-field form numbers weekdays as crontab does, 0–7 from Sunday (0 and 7 are
/// both Sunday); the `cron` crate, which apalis-cron ticks with, numbers them 1–7 from Sunday.
/// Numbers in the weekday field are translated (`1-5`, Monday to Friday, becomes `2-6`); names
/// (`MON-FRI`) and steps' lengths are kept. A range ending on Sunday (`5-7`) becomes the range to
/// Saturday and Sunday (`6-7,1`).
fn crontab_weekdays(field: &str) -> Result<String, String> {
    let day = |text: &str| -> Result<String, String> {
        match text.parse::<u8>() {
            Ok(number @ 0..=7) => Ok((number % 7 + 1).to_string()),
            Ok(number) => Err(format!("weekday {number} is not 0–7")),
            Err(_) => Ok(text.to_owned()),
        }
    };
    let items: Result<Vec<String>, String> = field
        .split(',')
        .map(|item| {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (item, None),
            };
            let translated = match range.split_once('-') {
                Some(("0", "7")) => "1-7".to_owned(),
                Some((from, "7")) if from.parse::<u8>().is_ok_and(|n| (1..7).contains(&n)) => {
                    if step.is_some() {
                        return Err(format!(
                            "the weekday range `{item}` ends on Sunday and has a step; write it as a list"
                        ));
                    }
                    return Ok(format!("{}-7,1", day(from)?));
                }
                Some((from, to)) => format!("{}-{}", day(from)?, day(to)?),
                None => day(range)?,
            };
            Ok(match step {
                Some(step) => format!("{translated}/{step}"),
                None => translated,
            })
        })
        .collect();
    Ok(items?.join(","))
}

impl Policy {
    /// Builds a policy; the caller has validated every field but the schedule.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        target: String,
        age_column: String,
        max_age: Span,
        mode: Option<Mode>,
        schedule_text: String,
        batch_size: Option<u32>,
        filter: Vec<Condition>,
        max_rows_per_run: Option<u64>,
        enabled: bool,
    ) -> Result<Self, String> {
        let schedule = parse_schedule(&schedule_text)?;
        Ok(Self {
            name,
            target,
            age_column,
            max_age,
            mode,
            schedule_text,
            schedule,
            batch_size,
            filter,
            max_rows_per_run,
            enabled,
        })
    }

    /// The parsed schedule (what apalis-cron ticks on).
    pub fn schedule(&self) -> &cron::Schedule {
        &self.schedule
    }

    /// The window `now` falls in: the latest tick at or before `now`.
    pub fn latest_window(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Ticks fall on whole seconds. Walking back from a whole second `t` yields ticks before
        // `t`, so from the next whole second the first one is at or before `now`. (From a
        // fractional instant the walk would start at the tick it is inside of.)
        let whole = DateTime::from_timestamp(now.timestamp(), 0)?;
        self.schedule
            .after(&(whole + chrono::Duration::seconds(1)))
            .next_back()
            .filter(|tick| *tick <= now)
    }

    /// The first tick after `now`.
    pub fn next_window(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&now).next()
    }

    /// The windows that open after `after` and at or before `until`, oldest first: the ticks a
    /// running scheduler's late timer jumped over. At most the newest `limit`: a scheduler
    /// stalled for many windows catches up like one that was down (the newest only, or a few).
    pub fn windows_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut newest = std::collections::VecDeque::with_capacity(limit);
        for tick in self
            .schedule
            .after(&after)
            .take_while(|tick| *tick <= until)
        {
            if newest.len() == limit {
                newest.pop_front();
            }
            if limit > 0 {
                newest.push_back(tick);
            }
        }
        newest.into()
    }

    /// The distance between the next two ticks: the period an operator expects runs at.
    pub fn interval(&self, now: DateTime<Utc>) -> Option<Duration> {
        let mut ticks = self.schedule.after(&now);
        let first = ticks.next()?;
        let second = ticks.next()?;
        (second - first).to_std().ok()
    }

    /// The idempotency key of the job for `window`.
    pub fn window_key(&self, window: DateTime<Utc>) -> String {
        format!(
            "{KEY_PREFIX}{}:{}",
            self.name,
            window.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }

    /// The job one run of this policy submits. `window` is the scheduled window (its key makes
    /// the job unique); `None` for an on-demand purge, which is not tied to a window.
    pub fn job_request(&self, window: Option<DateTime<Utc>>, requested_by: &str) -> JobRequest {
        let mut all = vec![Condition {
            column: self.age_column.clone(),
            op: Op::OlderThan,
            value: Some(json!(self.max_age.to_string())),
        }];
        all.extend(self.filter.iter().cloned());
        let reason = match window {
            Some(window) => format!(
                "retention policy `{}`: {} older than {} (window {})",
                self.name,
                self.age_column,
                self.max_age,
                window.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            None => format!(
                "retention policy `{}`: {} older than {} (on demand)",
                self.name, self.age_column, self.max_age
            ),
        };
        JobRequest {
            target: self.target.clone(),
            filter: Filter { all },
            all_rows: false,
            mode: self.mode,
            batch_size: self.batch_size,
            max_rows: self.max_rows_per_run,
            stop_at_max_rows: true,
            dry_run: false,
            requested_by: requested_by.to_owned(),
            reason,
            idempotency_key: window.map(|window| self.window_key(window)),
            strategy: None,
            restore: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn policy(schedule: &str) -> Policy {
        Policy::new(
            "old-sessions".into(),
            "sessions".into(),
            "created_at".into(),
            Span::parse("30d").unwrap(),
            None,
            schedule.into(),
            None,
            Vec::new(),
            Some(5000),
            true,
        )
        .unwrap()
    }

    #[test]
    fn the_windows_a_late_tick_jumped_over_are_listed_oldest_first_and_bounded() {
        let every_second = policy("* * * * * *");
        let last = at("2026-11-30T23:00:00Z");
        assert_eq!(
            every_second.windows_between(last, at("2026-11-30T23:00:03Z"), 8),
            vec![
                at("2026-11-30T23:00:01Z"),
                at("2026-11-30T23:00:02Z"),
                at("2026-11-30T23:00:03Z")
            ]
        );
        // Neither end's own window again; nothing when no tick fell between.
        assert!(every_second.windows_between(last, last, 8).is_empty());
        assert_eq!(
            every_second.windows_between(last, at("2026-11-30T23:10:00Z"), 2),
            vec![at("2026-11-30T23:09:59Z"), at("2026-11-30T23:10:00Z")]
        );
        assert!(
            every_second
                .windows_between(last, at("2026-11-30T23:10:00Z"), 0)
                .is_empty()
        );
    }

    #[test]
    fn windows_are_named_by_the_tick_that_opens_them() {
        let hourly = policy("0 * * * *");
        assert_eq!(
            hourly.latest_window(at("2026-11-30T22:59:59Z")),
            Some(at("2026-11-30T22:00:00Z"))
        );
        // A tick exactly at `now` opens the window `now` is in.
        assert_eq!(
            hourly.latest_window(at("2026-11-30T23:00:00Z")),
            Some(at("2026-11-30T23:00:00Z"))
        );
        assert_eq!(
            hourly.next_window(at("2026-11-30T23:00:00Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
        assert_eq!(
            hourly.interval(at("2026-11-30T23:00:00Z")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            hourly.window_key(at("2026-11-30T22:00:00Z")),
            "policy:old-sessions:2026-11-30T22:00:00Z"
        );
    }

    #[test]
    fn fractional_moments_belong_to_the_window_they_are_in() {
        let every_3_s = policy("*/3 * * * * *");
        assert_eq!(
            every_3_s.latest_window(at("2026-11-30T22:29:17.803776Z")),
            Some(at("2026-11-30T22:29:15Z"))
        );
        assert_eq!(
            every_3_s.latest_window(at("2026-11-30T22:29:18.000001Z")),
            Some(at("2026-11-30T22:29:18Z"))
        );
        assert_eq!(
            every_3_s.next_window(at("2026-11-30T22:29:17.9Z")),
            Some(at("2026-11-30T22:29:18Z"))
        );
    }

    #[test]
    fn every_moment_of_a_window_maps_to_the_same_key() {
        let every_15_s = policy("*/15 * * * * *");
        let keys: std::collections::BTreeSet<_> = (0..150)
            .map(|tenth| {
                let now = at("2026-11-30T22:00:15Z") + chrono::Duration::milliseconds(tenth * 100);
                every_15_s.window_key(every_15_s.latest_window(now).unwrap())
            })
            .collect();
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            vec!["policy:old-sessions:2026-11-30T22:00:15Z"]
        );
    }

    #[test]
    fn schedules_take_five_six_or_seven_fields_and_name_what_is_wrong() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        assert!(parse_schedule("0 */5 * * * *").is_ok());
        assert!(parse_schedule("0 0 3 * * * 2030").is_ok());
        let error = parse_schedule("daily").unwrap_err();
        assert!(error.contains("has 1 fields"), "{error}");
        let error = parse_schedule("0 61 * * *").unwrap_err();
        assert!(
            error.contains("`0 61 * * *` is not a cron expression"),
            "{error}"
        );
        let expired = Policy::new(
            "p".into(),
            "t".into(),
            "c".into(),
            Span::from_secs(1),
            None,
            "0 0 0 1 1 * 2001".into(),
            None,
            Vec::new(),
            None,
            true,
        )
        .unwrap();
        assert_eq!(expired.next_window(at("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn the_job_of_a_window_is_keyed_capped_and_stops_at_its_cap() {
        let job = policy("0 3 * * *").job_request(Some(at("2026-11-30T03:00:00Z")), SCHEDULER);
        assert_eq!(
            job.idempotency_key.as_deref(),
            Some("policy:old-sessions:2026-11-30T03:00:00Z")
        );
        assert_eq!(job.filter.all[0].op, Op::OlderThan);
        assert_eq!(job.filter.all[0].value, Some(json!("30d")));
        assert_eq!(job.max_rows, Some(5000));
        assert!(job.stop_at_max_rows);
        assert!(
            job.reason.contains("window 2026-11-30T03:00:00Z"),
            "{}",
            job.reason
        );
        let on_demand = policy("0 3 * * *").job_request(None, "alice");
        assert_eq!(on_demand.idempotency_key, None);
        assert_eq!(on_demand.requested_by, "alice");
    }
}
