//! Durations as users write them in specs: `500ms`, `5s`, `2m`, `1h`, `1d`, or `5 seconds`.

use std::time::Duration;

/// Parses a duration such as `500ms`, `5s`, `2 min` or `1h`; a bare number is not accepted
/// (its unit would be a guess). Returns a message saying what is wrong otherwise.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let usage = "write a number and a unit, like 500ms, 5s, 2m or 1h";
    let value: f64 = number.parse().map_err(|_| format!("invalid duration \"{text}\": {usage}"))?;
    let millis_per_unit = match unit.as_str() {
        "ms" | "millis" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        "" => return Err(format!("duration \"{text}\" has no unit: {usage}")),
        other => return Err(format!("unknown unit \"{other}\" in duration \"{text}\": {usage}")),
    };
    let millis = value * millis_per_unit;
    if !millis.is_finite() || millis > u64::MAX as f64 / 2.0 {
        return Err(format!("duration \"{text}\" is too large"));
    }
    Ok(Duration::from_millis(millis.round() as u64))
}

/// Parses Flink's watermark spelling, `FOR ts AS ts - INTERVAL '5' SECOND` (the leading `FOR`
/// and `WATERMARK FOR` are optional; `AS ts` alone means no out-of-orderness), into the column
/// and the delay.
pub fn parse_watermark_sql(text: &str) -> Result<(String, Duration), String> {
    let usage = "write it like Flink: FOR ts AS ts - INTERVAL '5' SECOND";
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut rest: &[&str] = &words;
    if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("watermark")) {
        rest = &rest[1..];
    }
    if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("for")) {
        rest = &rest[1..];
    }
    let [column, as_keyword, expression @ ..] = rest else {
        return Err(format!("invalid watermark \"{text}\": {usage}"));
    };
    if !as_keyword.eq_ignore_ascii_case("as") {
        return Err(format!("invalid watermark \"{text}\": expected AS after the column; {usage}"));
    }
    let column = column.trim_matches('`').trim_matches('"').to_owned();
    match expression {
        [same] if same.trim_matches('`').trim_matches('"') == column => Ok((column, Duration::ZERO)),
        [same, "-", interval, amount, unit] if same.trim_matches('`').trim_matches('"') == column => {
            if !interval.eq_ignore_ascii_case("interval") {
                return Err(format!("invalid watermark \"{text}\": expected INTERVAL after '-'; {usage}"));
            }
            let amount = amount.trim_matches('\'');
            let unit = unit.to_ascii_lowercase();
            let unit = unit.trim_end_matches('s');
            let unit = match unit {
                "millisecond" => "ms",
                "second" => "s",
                "minute" => "m",
                "hour" => "h",
                "day" => "d",
                other => {
                    return Err(format!(
                        "invalid watermark \"{text}\": unknown interval unit \"{other}\" \
                         (use MILLISECOND, SECOND, MINUTE, HOUR or DAY)"
                    ));
                }
            };
            Ok((column, parse_duration(&format!("{amount}{unit}"))?))
        }
        _ => Err(format!(
            "invalid watermark \"{text}\": the expression must be the column ({column}) minus an \
             INTERVAL; {usage}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5 s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2 minutes"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 fortnights").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").unwrap_err().contains("invalid duration"));
    }

    #[test]
    fn flink_watermarks_parse() {
        assert_eq!(
            parse_watermark_sql("FOR ts AS ts - INTERVAL '5' SECOND"),
            Ok(("ts".into(), Duration::from_secs(5)))
        );
        assert_eq!(
            parse_watermark_sql("WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECONDS"),
            Ok(("dateTime".into(), Duration::from_secs(4)))
        );
        assert_eq!(parse_watermark_sql("ts AS ts"), Ok(("ts".into(), Duration::ZERO)));
        assert!(parse_watermark_sql("FOR ts AS other - INTERVAL '5' SECOND").is_err());
        assert!(parse_watermark_sql("FOR ts AS ts - INTERVAL '5' FORTNIGHT").unwrap_err().contains("unit"));
        assert!(parse_watermark_sql("ts").is_err());
    }
}
