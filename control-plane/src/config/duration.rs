//! HAProxy-style durations: `500ms`, `5s`, `3600s`, `1m`, `1h`, `1d`; a bare number is
//! milliseconds, as in HAProxy. Everything is carried as whole milliseconds.

/// What is wrong with a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration (expected e.g. 500ms, 5s, 1h)")]
    NotADuration(String),
    #[error("{0:?} is too large a duration")]
    TooLarge(String),
    #[error("{0:?} has unknown unit {1:?} (use us, ms, s, m, h or d)")]
    Unit(String, String),
}

/// Parses a duration into milliseconds, or says what is wrong with it.
pub fn parse_ms(text: &str) -> Result<u64, DurationError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(DurationError::NotADuration(text.to_string()));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| DurationError::TooLarge(text.to_string()))?;
    let factor_us: u64 = match unit {
        "us" => 1,
        "" | "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return Err(DurationError::Unit(text.to_string(), unit.to_string())),
    };
    let us = n
        .checked_mul(factor_us)
        .ok_or_else(|| DurationError::TooLarge(text.to_string()))?;
    Ok(us.div_ceil(1_000))
}

#[cfg(test)]
mod tests {
    use super::parse_ms;

    #[test]
    fn parses_haproxy_units() {
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("5s"), Ok(5_000));
        assert_eq!(parse_ms("3600s"), Ok(3_600_000));
        assert_eq!(parse_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_ms("2m"), Ok(120_000));
        assert_eq!(parse_ms("250"), Ok(250));
        assert_eq!(parse_ms("1500us"), Ok(2));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_ms("").is_err());
        assert!(parse_ms("fast").is_err());
        assert!(parse_ms("5 parsecs").is_err());
        assert!(parse_ms("10x")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(parse_ms("99999999999999999999s").is_err());
    }
}
