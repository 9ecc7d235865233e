//! HAProxy-style durations: `500ms`, `5s`, `3600s`, `1m`, `1h`, `1d`; a bare number is
//! milliseconds, as in HAProxy. Everything is carried as whole milliseconds.

/// Parses a duration into milliseconds, or says what is wrong with it.
pub fn parse_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a duration (expected e.g. 500ms, 5s, 1h)"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large a duration"))?;
    let factor_us: u64 = match unit {
        "us" => 1,
        "" | "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => {
            return Err(format!(
                "{text:?} has unknown unit {unit:?} (use us, ms, s, m, h or d)"
            ))
        }
    };
    let us = n
        .checked_mul(factor_us)
        .ok_or_else(|| format!("{text:?} is too large a duration"))?;
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
        assert!(parse_ms("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_ms("99999999999999999999s").is_err());
    }
}
