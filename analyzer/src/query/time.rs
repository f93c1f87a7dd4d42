//! Time expressions for `--from/--to` and `from=`/`to=`: RFC 3339 (`2026-11-25T13:00:00Z`),
//! Unix milliseconds (`1764075600000`), and relative forms (`now`, `now-15m`, `now-1h30m`,
//! `now+10s`), all resolved to Unix milliseconds.

/// A time or duration that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not any of the accepted forms.
    #[error(
        "invalid time {0:?}: expected RFC 3339 (2026-11-25T13:00:00Z), Unix milliseconds, or now[-+]DURATION (now-15m)"
    )]
    Time(String),
    /// A duration that does not parse.
    #[error(
        "invalid duration {0:?}: expected a number with a unit, e.g. 500ms, 10s, 15m, 1h30m, 2d, 1w"
    )]
    Duration(String),
    /// A time before 1970 or after the year 9999.
    #[error("time {0:?} is out of range: expected a moment from 1970 to the year 9999")]
    Range(String),
}

/// The last moment a time expression may name: 9999-12-31T23:59:59.999Z, Unix ms. With times
/// in `0..=MAX_TIME_MS`, differences and sums of a few of them cannot overflow an `i64`.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Resolves a time expression to Unix milliseconds; `now_ms` is the current time.
///
/// # Errors
/// [`TimeError::Time`] when the text is none of the accepted forms.
///
/// ```
/// use critpath_analyzer::query::parse_time_ms;
/// let now = 1_764_075_600_000;
/// assert_eq!(parse_time_ms("now-15m", now), Ok(now - 15 * 60_000));
/// assert_eq!(parse_time_ms("1764075600000", now), Ok(1_764_075_600_000));
/// assert_eq!(parse_time_ms("2025-11-25T13:00:00Z", now), Ok(1_764_075_600_000));
/// ```
pub fn parse_time_ms(text: &str, now_ms: i64) -> Result<i64, TimeError> {
    let t = text.trim();
    let bad = || TimeError::Time(text.to_owned());
    if let Some(rest) = t.strip_prefix("now") {
        let rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(now_ms);
        }
        let (sign, duration) = match rest.split_at(1) {
            ("-", d) => (-1, d),
            ("+", d) => (1, d),
            _ => return Err(bad()),
        };
        let ms = parse_duration_ms(duration.trim()).map_err(|_| bad())?;
        return in_range(now_ms.checked_add(sign * ms), text);
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return in_range(t.parse().ok(), text);
    }
    let ts: jiff::Timestamp = t.parse().map_err(|_| bad())?;
    in_range(Some(ts.as_millisecond()), text)
}

fn in_range(ms: Option<i64>, text: &str) -> Result<i64, TimeError> {
    ms.filter(|ms| (0..=MAX_TIME_MS).contains(ms))
        .ok_or_else(|| TimeError::Range(text.to_owned()))
}

/// Parses a duration such as `500ms`, `15m`, `1h30m`, `2d`, `1w` into milliseconds.
///
/// # Errors
/// [`TimeError::Duration`] when a part lacks a number or a known unit.
pub fn parse_duration_ms(text: &str) -> Result<i64, TimeError> {
    let bad = || TimeError::Duration(text.to_owned());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_075_600_000;

    /// Times outside 1970..=9999 are refused, whatever their form, so that windows built from
    /// them cannot overflow.
    #[test]
    fn out_of_range_times_are_refused() {
        for text in [
            "now-9223372036854775807ms",
            "now+9223372036854775807ms",
            "now-3000w",
            "9223372036854775807",
            "99999999999999999999",
            "253402300800000",
        ] {
            assert_eq!(
                parse_time_ms(text, NOW),
                Err(TimeError::Range(text.to_owned())),
                "{text}"
            );
        }
        assert_eq!(parse_time_ms("253402300799999", NOW), Ok(MAX_TIME_MS));
        assert_eq!(parse_time_ms("now-55y", NOW).map_err(|_| ()), Err(()));
    }

    /// Every accepted form resolves to the same instant scale: Unix milliseconds.
    #[test]
    fn accepted_forms() {
        assert_eq!(parse_time_ms("now", NOW), Ok(NOW));
        assert_eq!(parse_time_ms(" now - 1h30m ", NOW), Ok(NOW - 5_400_000));
        assert_eq!(parse_time_ms("now+10s", NOW), Ok(NOW + 10_000));
        assert_eq!(parse_time_ms("0", NOW), Ok(0));
        assert_eq!(parse_time_ms("2025-11-25T14:00:00+01:00", NOW), Ok(NOW));
        assert_eq!(
            parse_time_ms("2025-11-25T13:00:00.250Z", NOW),
            Ok(NOW + 250)
        );
    }

    /// Anything else is refused with the accepted forms in the message.
    #[test]
    fn refused_forms() {
        for bad in [
            "",
            "yesterday",
            "now-",
            "now-15",
            "now*2",
            "now-15x",
            "12abc",
            "2025-13-45T00:00:00Z",
        ] {
            let e = parse_time_ms(bad, NOW).unwrap_err();
            assert!(e.to_string().contains("RFC 3339"), "{bad}: {e}");
        }
        assert!(parse_duration_ms("m").is_err());
        assert!(parse_duration_ms("99999999999999999w").is_err());
        assert_eq!(
            parse_duration_ms("1w2d3h4m5s6ms"),
            Ok(((((7 + 2) * 24 + 3) * 60 + 4) * 60 + 5) * 1000 + 6)
        );
    }
}
