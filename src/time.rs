//! Times as users write them and as zms prints them, all through `jiff`.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use crate::{errinput, Result};

/// Bare numbers below this are unix seconds, from it on unix milliseconds. 10^11 seconds is
/// the year 5138 and 10^11 milliseconds is 1973-03-03, so no time either way of writing
/// reaches the other's range: a count of seconds has at most 11 digits, of milliseconds 12
/// or more (13 today).
pub const SECONDS_BELOW: i64 = 100_000_000_000;

/// Parses a TIME in the local time zone (`TZ`, else the system's); see [`parse_in`].
///
/// # Errors
/// [`crate::Error::Input`] with the accepted forms.
pub fn parse(text: &str, now_ms: i64) -> Result<i64> {
    parse_in(text, now_ms, &TimeZone::system())
}

/// Parses a TIME into unix milliseconds:
/// - RFC 3339 with a zone: `2026-11-24T10:00:00Z`, `2026-11-24T11:00:00+01:00`;
/// - a date-time without a zone, in `tz`: `2026-11-24T10:00`, `2026-11-24 10:00:00`;
/// - a date, midnight in `tz`: `2026-11-24`;
/// - unix seconds (`1764000000`) or milliseconds (`1764000000000`), told apart by
///   [`SECONDS_BELOW`];
/// - a duration before `now_ms`: `10m`, `2h`, `1h 30m`, `3d` (days as `tz` counts them).
///
/// # Errors
/// [`crate::Error::Input`] with the accepted forms.
pub fn parse_in(text: &str, now_ms: i64, tz: &TimeZone) -> Result<i64> {
    let text = text.trim();
    let bad = || {
        errinput!(
            "bad TIME '{}': use RFC 3339 (2026-11-24T10:00:00Z), a local date or date-time \
             (2026-11-24, 2026-11-24T10:00), unix seconds or milliseconds, or a duration ago (10m, 2h)",
            text.escape_debug()
        )
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = text.parse().map_err(|_| bad())?;
        return match n < SECONDS_BELOW {
            true => Ok(n * 1000),
            false => Ok(n),
        };
    }
    if let Ok(stamp) = text.parse::<Timestamp>() {
        return Ok(stamp.as_millisecond());
    }
    if let Ok(local) = text.parse::<DateTime>() {
        let zoned = local.to_zoned_datetime(tz.clone()).map_err(|_| bad())?;
        return Ok(zoned.timestamp().as_millisecond());
    }
    let ago: Span = text.parse().map_err(|_| bad())?;
    let now = Timestamp::from_millisecond(now_ms).map_err(|_| bad())?;
    let then = now
        .to_zoned_datetime(tz.clone())
        .checked_sub(ago)
        .map_err(|_| bad())?;
    Ok(then.timestamp().as_millisecond())
}

/// Formats unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let stamp = Timestamp::from_millisecond(ms.max(0)).unwrap_or(Timestamp::MAX);
    format!("{stamp:.3}")
}

/// `HH:MM:SS` (UTC) of unix milliseconds, for the terminal.
pub fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The current time, unix milliseconds.
pub fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        let now = 1_764_000_000_000;
        let parse = |text: &str| parse_in(text, now, &TimeZone::UTC);
        assert_eq!(parse("1764000000000").unwrap(), 1_764_000_000_000);
        assert_eq!(parse("10m").unwrap(), now - 600_000);
        assert_eq!(parse("1h 30m").unwrap(), now - 5_400_000);
        assert_eq!(parse("2d").unwrap(), now - 2 * 86_400_000);
        assert_eq!(parse("2025-11-24T16:00:00Z").unwrap(), 1_764_000_000_000);
        assert_eq!(
            parse("2025-11-24T16:00:00.250Z").unwrap(),
            1_764_000_000_250
        );
        assert_eq!(
            parse("2025-11-24T17:00:00+01:00").unwrap(),
            1_764_000_000_000
        );
        assert_eq!(
            parse("2025-11-24T15:30:00-00:30").unwrap(),
            1_764_000_000_000
        );
        for bad in ["", "yesterday", "2025-13-01T00:00:00Z", "10 parsecs", "1.5"] {
            assert!(
                parse(bad).unwrap_err().to_string().contains("bad TIME"),
                "{bad}"
            );
        }
    }

    #[test]
    fn bare_numbers_are_seconds_or_milliseconds_by_size() {
        let parse = |text: &str| parse_in(text, 0, &TimeZone::UTC).unwrap();
        assert_eq!(parse("1764000000"), 1_764_000_000_000, "seconds, today");
        assert_eq!(
            parse("1764000000000"),
            1_764_000_000_000,
            "milliseconds, today"
        );
        assert_eq!(
            parse("99999999999"),
            99_999_999_999_000,
            "seconds up to 5138"
        );
        assert_eq!(
            parse("100000000000"),
            100_000_000_000,
            "milliseconds from 1973"
        );
        assert_eq!(parse("0"), 0);
    }

    #[test]
    fn dates_and_date_times_without_a_zone_are_local() {
        // A fixed UTC+1, so the test needs no time zone database.
        let berlin = TimeZone::fixed(jiff::tz::offset(1));
        let parse = |text: &str, tz: &TimeZone| parse_in(text, 0, tz).unwrap();
        // 2026-12-03 00:00 at UTC+1 is 2026-12-02T23:00Z.
        let midnight = parse("2026-12-02T23:00:00Z", &TimeZone::UTC);
        assert_eq!(parse("2026-12-03", &berlin), midnight);
        assert_eq!(parse("2026-12-03T00:00", &berlin), midnight);
        assert_eq!(parse("2026-12-03 01:30:00", &berlin), midnight + 5_400_000);
        assert_eq!(parse("2026-12-03", &TimeZone::UTC), midnight + 3_600_000);
    }

    #[test]
    fn formats_with_milliseconds() {
        assert_eq!(rfc3339(1_764_000_000_250), "2025-11-24T16:00:00.250Z");
        assert_eq!(rfc3339(1_764_000_000_000), "2025-11-24T16:00:00.000Z");
        assert_eq!(clock(1_764_000_000_250), "16:00:00");
    }
}
