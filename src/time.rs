//! Times as users write them and as zms prints them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{errinput, Result};

/// Parses a TIME: RFC 3339 (`2026-11-24T10:00:00Z`, `…+01:00`), unix milliseconds
/// (`1764000000000`), or a duration before `now_ms` (`10m`, `2h`, `1h 30m`).
///
/// # Errors
/// [`crate::Error::Input`] with the accepted forms.
pub fn parse(text: &str, now_ms: i64) -> Result<i64> {
    let text = text.trim();
    let bad = || {
        errinput!("bad TIME '{text}': use RFC 3339 (2026-11-24T10:00:00Z), unix milliseconds, or a duration ago (10m, 2h)")
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().map_err(|_| bad());
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(now_ms - i64::try_from(ago.as_millis()).map_err(|_| bad())?);
    }
    // humantime reads only UTC ("Z"); fold a numeric offset in by hand.
    let (stamp, offset_ms) = match text.len().checked_sub(6).map(|i| text.split_at(i)) {
        Some((head, tail))
            if head.contains('T')
                && (tail.starts_with('+') || tail.starts_with('-'))
                && tail.as_bytes()[3] == b':' =>
        {
            let sign = if tail.starts_with('-') { -1 } else { 1 };
            let hours: i64 = tail[1..3].parse().map_err(|_| bad())?;
            let minutes: i64 = tail[4..6].parse().map_err(|_| bad())?;
            (format!("{head}Z"), sign * (hours * 60 + minutes) * 60_000)
        }
        _ => (text.to_string(), 0),
    };
    let time = humantime::parse_rfc3339_weak(stamp.trim_end_matches('Z')).map_err(|_| bad())?;
    let ms = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_millis() as i64;
    Ok(ms - offset_ms)
}

/// Formats unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// `HH:MM:SS` (UTC) of unix milliseconds, for the terminal.
pub fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The current time, unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        let now = 1_764_000_000_000;
        assert_eq!(parse("1764000000000", now).unwrap(), 1_764_000_000_000);
        assert_eq!(parse("10m", now).unwrap(), now - 600_000);
        assert_eq!(parse("1h 30m", now).unwrap(), now - 5_400_000);
        assert_eq!(
            parse("2025-11-24T16:00:00Z", now).unwrap(),
            1_764_000_000_000
        );
        assert_eq!(
            parse("2025-11-24T16:00:00.250Z", now).unwrap(),
            1_764_000_000_250
        );
        assert_eq!(
            parse("2025-11-24T17:00:00+01:00", now).unwrap(),
            1_764_000_000_000
        );
        assert_eq!(
            parse("2025-11-24T15:30:00-00:30", now).unwrap(),
            1_764_000_000_000
        );
        for bad in ["", "yesterday", "2025-13-01T00:00:00Z", "10 parsecs"] {
            assert!(
                parse(bad, now)
                    .unwrap_err()
                    .to_string()
                    .contains("bad TIME"),
                "{bad}"
            );
        }
    }

    #[test]
    fn formats_with_milliseconds() {
        assert_eq!(rfc3339(1_764_000_000_250), "2025-11-24T16:00:00.250Z");
        assert_eq!(clock(1_764_000_000_250), "16:00:00");
    }
}
