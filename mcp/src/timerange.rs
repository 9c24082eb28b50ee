//! `timeRange` arguments: a look-back like `15m`, `1h`, `2d`, or an RFC 3339 interval
//! `START/END`. Pure; bounded to [`RANGE_SECS_MAX`].

use chrono::{DateTime, Duration, Utc};

/// The longest window a caller may ask for: 7 days.
pub const RANGE_SECS_MAX: i64 = 7 * 24 * 3600;

/// A closed time window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A parsed `timeRange`: a look-back resolved against the backend's clock (which a
/// simulation may run ahead of the wall clock), or a fixed interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeRange {
    Last(Duration),
    Between(TimeWindow),
}

impl TimeRange {
    pub fn window(self, now: DateTime<Utc>) -> TimeWindow {
        match self {
            TimeRange::Last(d) => TimeWindow {
                start: now - d,
                end: now,
            },
            TimeRange::Between(w) => w,
        }
    }
}

/// Parses `s` relative to `now`. Errors are sentences a model can act on.
pub fn parse(s: &str, now: DateTime<Utc>) -> Result<TimeWindow, String> {
    parse_range(s).map(|r| r.window(now))
}

/// Parses `s`. Errors are sentences a model can act on.
pub fn parse_range(s: &str) -> Result<TimeRange, String> {
    let s = s.trim();
    const HELP: &str = "use a look-back like 30s, 15m, 1h, 2d, or an RFC 3339 interval START/END";
    if s.is_empty() {
        return Err(format!("timeRange is empty: {HELP}"));
    }
    if let Some((start, end)) = s.split_once('/') {
        let start = DateTime::parse_from_rfc3339(start.trim())
            .map_err(|_| format!("timeRange start {start:?} is not RFC 3339: {HELP}"))?
            .with_timezone(&Utc);
        let end = DateTime::parse_from_rfc3339(end.trim())
            .map_err(|_| format!("timeRange end {end:?} is not RFC 3339: {HELP}"))?
            .with_timezone(&Utc);
        if end <= start {
            return Err("timeRange end must be after its start".into());
        }
        if (end - start).num_seconds() > RANGE_SECS_MAX {
            return Err(format!(
                "timeRange is longer than {} days",
                RANGE_SECS_MAX / 86400
            ));
        }
        return Ok(TimeRange::Between(TimeWindow { start, end }));
    }
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("timeRange {s:?} is not understood: {HELP}"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86400),
        _ => return Err(format!("timeRange {s:?} has no unit s, m, h or d: {HELP}")),
    }
    .filter(|secs| (1..=RANGE_SECS_MAX).contains(secs))
    .ok_or_else(|| format!("timeRange must be from 1s to {}d", RANGE_SECS_MAX / 86400))?;
    Ok(TimeRange::Last(Duration::seconds(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn look_backs_end_now() {
        for (s, secs) in [
            ("30s", 30),
            ("15m", 900),
            ("1h", 3600),
            ("2d", 172800),
            (" 5m ", 300),
        ] {
            let w = parse(s, now()).unwrap();
            assert_eq!(w.end, now());
            assert_eq!((w.end - w.start).num_seconds(), secs, "{s}");
        }
    }

    #[test]
    fn intervals_are_taken_as_given() {
        let w = parse("2026-11-24T11:00:00Z/2026-11-24T11:30:00+00:00", now()).unwrap();
        assert_eq!((w.end - w.start).num_seconds(), 1800);
    }

    #[test]
    fn nonsense_is_refused_with_a_hint() {
        for s in [
            "",
            "15",
            "m",
            "15x",
            "-5m",
            "0m",
            "8d",
            "99999999999999999999h",
            "1h30m",
            "2026-11-24T11:00:00Z/2026-11-24T10:00:00Z",
            "yesterday/today",
            "2026-11-01T00:00:00Z/2026-11-24T00:00:00Z",
        ] {
            assert!(parse(s, now()).is_err(), "{s:?}");
        }
        assert!(parse("15x", now()).unwrap_err().contains("15m"));
    }
}
