//! Spans of time written the human way (`30d`, `12h`, `250ms`): `older_than` ages, retention ages and config durations.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A positive span of time written the human way (`30d`, `12h`, `90m`, `1w`). It is shown as
/// written: a span of one term keeps its unit (`90d` stays `90d`, `36h` stays `36h`); one of
/// several terms (`1w 2d`) is shown in days, hours, minutes, seconds and milliseconds (`9d`),
/// never in months or years of approximate length. Equality and order are by duration.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    duration: Duration,
    /// The unit of a one-term span as written.
    unit: Option<Unit>,
}

/// The units a span is shown in, with humantime's lengths (a month is 30.44 days, a year
/// 365.25 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Millis,
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
    Years,
}

impl Unit {
    /// Every spelling humantime accepts for the unit, and the unit.
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "ms" | "msec" | "millis" => Unit::Millis,
            "s" | "sec" | "secs" | "second" | "seconds" => Unit::Seconds,
            "m" | "min" | "mins" | "minute" | "minutes" => Unit::Minutes,
            "h" | "hr" | "hrs" | "hour" | "hours" => Unit::Hours,
            "d" | "day" | "days" => Unit::Days,
            "w" | "week" | "weeks" => Unit::Weeks,
            "M" | "month" | "months" => Unit::Months,
            "y" | "year" | "years" => Unit::Years,
            _ => return None,
        })
    }

    fn millis(self) -> u128 {
        match self {
            Unit::Millis => 1,
            Unit::Seconds => 1_000,
            Unit::Minutes => 60_000,
            Unit::Hours => 3_600_000,
            Unit::Days => 86_400_000,
            Unit::Weeks => 7 * 86_400_000,
            Unit::Months => 2_630_016_000,
            Unit::Years => 31_557_600_000,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Unit::Millis => "ms",
            Unit::Seconds => "s",
            Unit::Minutes => "m",
            Unit::Hours => "h",
            Unit::Days => "d",
            Unit::Weeks => "w",
            Unit::Months => "M",
            Unit::Years => "y",
        }
    }
}

impl Span {
    /// A span of whole seconds (for defaults).
    pub const fn from_secs(secs: u64) -> Self {
        Self {
            duration: Duration::from_secs(secs),
            unit: None,
        }
    }

    /// A span of milliseconds (for defaults).
    pub const fn from_millis(millis: u64) -> Self {
        Self {
            duration: Duration::from_millis(millis),
            unit: None,
        }
    }

    /// Parses `30d`, `12h`, `1w 2d`, … Zero and unit-less numbers are rejected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "`{text}` has no unit; write it like `30d`, `12h` or `45m`"
            ));
        }
        let duration = humantime::parse_duration(trimmed)
            .map_err(|error| format!("`{text}` is not a duration like `30d` or `12h` ({error})"))?;
        if duration.is_zero() {
            return Err(format!("`{text}` is zero; a span must be positive"));
        }
        // One term (`90d`, `90 days`): remember its unit, to show it as written.
        let digits = trimmed.len()
            - trimmed
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        let unit = Unit::named(trimmed[digits..].trim());
        Ok(Self { duration, unit })
    }

    /// The span as a standard duration.
    pub fn as_duration(self) -> Duration {
        self.duration
    }
}

impl PartialEq for Span {
    fn eq(&self, other: &Self) -> bool {
        self.duration == other.duration
    }
}

impl Eq for Span {}

impl PartialOrd for Span {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Span {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.duration.cmp(&other.duration)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.duration.as_millis();
        if let Some(unit) = self.unit
            && millis.is_multiple_of(unit.millis())
        {
            return write!(f, "{}{}", millis / unit.millis(), unit.suffix());
        }
        if millis == 0 || !self.duration.subsec_nanos().is_multiple_of(1_000_000) {
            // Below a millisecond: humantime's own form.
            return write!(f, "{}", humantime::format_duration(self.duration));
        }
        let mut rest = millis;
        let mut terms = Vec::new();
        for unit in [
            Unit::Days,
            Unit::Hours,
            Unit::Minutes,
            Unit::Seconds,
            Unit::Millis,
        ] {
            let count = rest / unit.millis();
            if count > 0 {
                terms.push(format!("{count}{}", unit.suffix()));
                rest %= unit.millis();
            }
        }
        write!(f, "{}", terms.join(" "))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_units() {
        assert_eq!(
            Span::parse("30d").map(Span::as_duration),
            Ok(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            Span::parse("12h").map(Span::as_duration),
            Ok(Duration::from_secs(12 * 3_600))
        );
        assert_eq!(
            Span::parse("1w 1d").map(Span::as_duration),
            Ok(Duration::from_secs(8 * 86_400))
        );
    }

    #[test]
    fn rejects_zero_missing_unit_and_garbage() {
        assert!(Span::parse("0d").unwrap_err().contains("zero"));
        assert!(Span::parse("30").unwrap_err().contains("no unit"));
        assert!(Span::parse("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn shown_as_written() {
        let shown = |text: &str| Span::parse(text).unwrap().to_string();
        assert_eq!(shown("90d"), "90d");
        assert_eq!(shown("365d"), "365d");
        assert_eq!(shown("90 days"), "90d");
        assert_eq!(shown("36h"), "36h");
        assert_eq!(shown("2w"), "2w");
        assert_eq!(shown("14d"), "14d");
        assert_eq!(shown("3months"), "3M");
        assert_eq!(shown("250ms"), "250ms");
        assert_eq!(shown("1w 2d"), "9d");
        assert_eq!(shown("1h 30m"), "1h 30m");
        assert_eq!(Span::from_secs(900).to_string(), "15m");
        assert_eq!(Span::from_millis(50).to_string(), "50ms");
        assert_eq!(Span::parse("30d"), Span::parse("720h"));
    }
}
