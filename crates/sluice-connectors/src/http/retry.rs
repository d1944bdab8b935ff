//! When a request is tried again, and after how long: pure decisions over statuses, headers and
//! attempt counts, so they are tested without a server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first included (1: never retried).
    pub max_attempts: u32,
    /// The backoff ceiling after the first failed attempt; it doubles with every attempt.
    pub initial_backoff: Duration,
    /// The largest backoff ceiling.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The longest wait after failed attempt `attempt` (1-based) before the next:
    /// `initial_backoff * 2^(attempt-1)`, at most `max_backoff`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// The wait after failed attempt `attempt`: what the server asked for in `Retry-After` if
    /// it did, else "full jitter" — uniform in `[0, ceiling]` — so that many writers failing
    /// together do not retry together. `unit` is a uniform random number in `[0, 1)`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        match retry_after {
            Some(asked) => asked,
            None => self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0)),
        }
    }
}

/// What a response status means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// 429 and 5xx: the server may accept it later.
    Retry,
    /// Any other status (4xx, and 1xx/3xx which a webhook should not answer): the request
    /// itself is wrong, so sending it again cannot help.
    Reject,
}

/// The verdict for an HTTP status code.
pub(crate) fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Reject,
    }
}

/// The wait a `Retry-After` header value asks for, at `now`: delay-seconds (`120`) or an
/// HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`, zero if already past). None for anything else.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the HTTP date format servers must
/// send (RFC 9110, section 5.6.7).
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let rest = value.split_once(", ")?.1;
    let fields: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = fields[..] else { return None };
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time.split(':').map(|part| part.parse().ok()).collect::<Option<_>>()?;
    let [hours, minutes, seconds] = hms[..] else { return None };
    if !(1..=31).contains(&day) || hours > 23 || minutes > 59 || seconds > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = u64::try_from(days).ok()? * 86_400 + hours * 3_600 + minutes * 60 + seconds;
    Some(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1_000),
        }
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_maximum() {
        let ceilings: Vec<u128> = (1..=6).map(|attempt| policy().ceiling(attempt).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(policy().ceiling(u32::MAX), Duration::from_millis(1_000), "no overflow");
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling_and_retry_after_wins() {
        let policy = policy();
        assert_eq!(policy.delay(3, None, 0.0), Duration::ZERO);
        assert_eq!(policy.delay(3, None, 0.5), policy.ceiling(3) / 2);
        assert!(policy.delay(3, None, 0.999_999) <= policy.ceiling(3));
        let asked = Duration::from_secs(7);
        assert_eq!(policy.delay(1, Some(asked), 0.5), asked, "even beyond max_backoff");
    }

    #[test]
    fn statuses_are_delivered_retried_or_rejected() {
        let verdicts: Vec<Verdict> = [200, 204, 400, 401, 404, 409, 429, 500, 502, 503, 599, 301, 100]
            .into_iter()
            .map(verdict)
            .collect();
        use Verdict::*;
        assert_eq!(
            verdicts,
            [
                Delivered, Delivered, Reject, Reject, Reject, Reject, Retry, Retry, Retry, Retry, Retry,
                Reject, Reject
            ]
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // 2015-10-21 07:27:50 UTC
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO), "past");
        for bad in ["", "-1", "1.5", "soon", "Wed, 21 Oct 2015 07:28:00 CET", "Wed, 32 Oct 2015 07:28:00 GMT"]
        {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn http_dates_match_the_unix_clock() {
        // Independent reference: 1994-11-06 is 784,080,000 s after the epoch (9,075 days).
        let parsed = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parsed, UNIX_EPOCH + Duration::from_secs(9_075 * 86_400 + 8 * 3_600 + 49 * 60 + 37));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
