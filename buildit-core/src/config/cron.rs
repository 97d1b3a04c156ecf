//! Five-field cron expressions, checked field by field so an error points at the field that is wrong.

/// The fields of a cron expression, with their ranges and names.
const FIELDS: [(&str, u32, u32, &[&str]); 5] = [
    ("minute", 0, 59, &[]),
    ("hour", 0, 23, &[]),
    ("day of month", 1, 31, &[]),
    (
        "month",
        1,
        12,
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    ),
    (
        "day of week",
        0,
        7,
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    ),
];

const MACROS: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

/// A cron problem: the byte range of the offending field within the expression and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CronError {
    pub(crate) range: std::ops::Range<usize>,
    pub(crate) message: String,
}

/// Checks a cron expression: five fields (minute hour day-of-month month day-of-week) or a macro like `@daily`.
pub(crate) fn validate_cron(expression: &str) -> Result<(), CronError> {
    let whole = 0..expression.len();
    if expression.starts_with('@') {
        return if MACROS.contains(&expression) {
            Ok(())
        } else {
            Err(CronError {
                range: whole,
                message: format!(
                    "unknown cron macro `{expression}` (known: {})",
                    MACROS.join(", ")
                ),
            })
        };
    }
    let fields: Vec<(usize, &str)> = expression
        .split_ascii_whitespace()
        .map(|field| {
            (
                field.as_ptr() as usize - expression.as_ptr() as usize,
                field,
            )
        })
        .collect();
    if fields.len() != FIELDS.len() {
        return Err(CronError {
            range: whole,
            message: format!(
                "a cron expression has 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ),
        });
    }
    for ((start, field), (name, min, max, names)) in fields.into_iter().zip(FIELDS) {
        validate_field(field, min, max, names).map_err(|problem| CronError {
            range: start..start + field.len(),
            message: format!("invalid {name} field `{field}`: {problem}"),
        })?;
    }
    Ok(())
}

fn validate_field(field: &str, min: u32, max: u32, names: &[&str]) -> Result<(), String> {
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (part, None),
        };
        if let Some(step) = step {
            match digits(step).and_then(|step| step.parse::<u32>().ok()) {
                Some(step) if step >= 1 && step <= max => {}
                _ => return Err(format!("step `{step}` must be a number from 1 to {max}")),
            }
        }
        if range == "*" {
            continue;
        }
        let (low, high) = match range.split_once('-') {
            Some((low, high)) => (
                value(low, min, max, names)?,
                Some(value(high, min, max, names)?),
            ),
            None => (value(range, min, max, names)?, None),
        };
        if let Some(high) = high
            && high < low
        {
            return Err(format!("range `{range}` goes backwards"));
        }
    }
    Ok(())
}

fn value(text: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    if let Some(index) = names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        // Month names start at 1, weekday names at 0 (Sunday).
        return Ok(index as u32 + min);
    }
    match digits(text).map(str::parse::<u32>) {
        Some(Ok(number)) if (min..=max).contains(&number) => Ok(number),
        Some(Ok(number)) => Err(format!("{number} is outside {min}-{max}")),
        _ if text.is_empty() => Err("empty value".into()),
        _ => Err(format!("`{text}` is not a number")),
    }
}

/// `text` when it is made of ASCII digits only (Rust's parser would also take a leading `+`).
fn digits(text: &str) -> Option<&str> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_schedules() {
        for ok in [
            "0 3 * * *",
            "*/15 * * * *",
            "0 0 1 jan *",
            "0 9-17 * * mon-fri",
            "5,10 0 * * 0",
            "@daily",
            "0 0 * * 7",
        ] {
            assert_eq!(validate_cron(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn points_at_the_bad_field() {
        let error = validate_cron("0 25 * * *").err();
        assert_eq!(error.as_ref().map(|e| e.range.clone()), Some(2..4));
        assert!(error.is_some_and(|e| e.message.contains("hour")));
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "@often",
            "+5 * * * *",
            "*/+2 * * * *",
            "a * * * *",
        ] {
            assert!(validate_cron(bad).is_err(), "{bad} should be rejected");
        }
    }
}
