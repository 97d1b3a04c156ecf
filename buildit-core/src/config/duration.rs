//! Human durations as written in pipelines: `90s`, `10m`, `1h30m`.

use std::time::Duration;

/// Parses `1h30m`, `10m`, `90s`, `1d` (units d, h, m, s, each at most once, largest first).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
    if text.is_empty() {
        return Err("a duration cannot be empty".into());
    }
    let mut seconds: u64 = 0;
    let mut next_unit = 0;
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let Some(position) = UNITS.iter().position(|(unit, _)| *unit == ch) else {
            return Err(format!("unknown unit `{ch}` in duration `{text}`"));
        };
        if digits.is_empty() {
            return Err(format!("unit `{ch}` has no number before it in `{text}`"));
        }
        if position < next_unit {
            return Err(format!(
                "units in `{text}` must go from largest to smallest, each once"
            ));
        }
        let amount: u64 = digits
            .parse()
            .map_err(|_| format!("number too large in duration `{text}`"))?;
        seconds = amount
            .checked_mul(UNITS[position].1)
            .and_then(|s| s.checked_add(seconds))
            .ok_or_else(|| format!("duration `{text}` is too long"))?;
        digits.clear();
        next_unit = position + 1;
    }
    if !digits.is_empty() {
        return Err(format!(
            "`{digits}` in `{text}` has no unit (use s, m, h or d)"
        ));
    }
    if seconds == 0 {
        return Err("a duration must be longer than zero".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// Formats a duration the way it is written in pipelines.
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d2h3m4s"), Ok(Duration::from_secs(93_784)));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "30m1h",
            "1m1m",
            "0s",
            "99999999999999999999s",
            "1.5h",
            "-1m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["90s", "10m", "1h30m", "1d2h3m4s"] {
            let parsed = parse_duration(text).map(format_duration);
            let reparsed = parsed.as_deref().map(parse_duration);
            assert_eq!(reparsed, Ok(parse_duration(text)));
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
