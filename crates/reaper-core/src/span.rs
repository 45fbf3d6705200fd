//! Spans of time written the human way (`30d`, `12h`, `250ms`): `older_than` ages, retention ages and config durations.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A positive span of time written the human way (`30d`, `12h`, `90m`, `1w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(Duration);

impl Span {
    /// A span of whole seconds (for defaults).
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// A span of milliseconds (for defaults).
    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
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
        Ok(Self(duration))
    }

    /// The span as a standard duration.
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
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
}
