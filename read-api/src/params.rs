//! Query-string parameters: parsed leniently (bad percent-encoding cannot fail), then checked
//! strictly — unknown or repeated parameters, bad numbers, times, enums and page sizes are
//! each a `400` naming the parameter.

use chrono::{DateTime, Utc};

use crate::error::ApiError;

/// Longest accepted text value (search text, ids, filters).
pub const MAX_TEXT: usize = 512;

/// The years a time may fall in (in UTC): what both PostgreSQL and Elasticsearch accept and
/// RFC 3339 can write (four digits).
pub const YEARS: std::ops::RangeInclusive<i32> = 0..=9999;

/// An optional start and end time.
pub type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The parameters of one request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses a raw query string and rejects parameters not in `allowed` and repeated ones.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let shown: String = name.chars().take(64).collect();
                return Err(ApiError::bad(
                    shown,
                    format!("unknown parameter; accepted: {}", allowed.join(", ")),
                ));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::bad(name.clone(), "given more than once"));
            }
        }
        Ok(Params { pairs })
    }

    /// A typed parameter's value as given: absent is `None`, present but empty is a `400`
    /// (an empty number, time or choice is not a value), never trimmed.
    fn typed(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let Some((_, value)) = self.pairs.iter().find(|(n, _)| n == name) else {
            return Ok(None);
        };
        if value.is_empty() {
            return Err(ApiError::bad(
                name,
                "empty; leave the parameter out instead",
            ));
        }
        if value.chars().count() > MAX_TEXT {
            return Err(ApiError::bad(
                name,
                format!("longer than {MAX_TEXT} characters"),
            ));
        }
        Ok(Some(value))
    }

    /// A text parameter (trimmed; empty counts as absent), at most [`MAX_TEXT`] characters.
    pub fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        let Some((_, value)) = self.pairs.iter().find(|(n, _)| n == name) else {
            return Ok(None);
        };
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        if value.chars().count() > MAX_TEXT {
            return Err(ApiError::bad(
                name,
                format!("longer than {MAX_TEXT} characters"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ApiError::bad(name, "contains control characters"));
        }
        Ok(Some(value.to_owned()))
    }

    /// An integer parameter within `min..=max`.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.typed(name)? else {
            return Ok(None);
        };
        let value: i64 = text
            .parse()
            .map_err(|_| ApiError::bad(name, format!("expected an integer, found {text:?}")))?;
        if value < min || value > max {
            return Err(ApiError::bad(
                name,
                format!("must be between {min} and {max}"),
            ));
        }
        Ok(Some(value))
    }

    /// An RFC 3339 time (`2026-11-23T10:00:00Z`) or a date (`2026-11-23`, midnight UTC).
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.typed(name)? {
            None => Ok(None),
            Some(text) => time(name, text).map(Some),
        }
    }

    /// One of `choices`.
    pub fn choice(&self, name: &str, choices: &[&str]) -> Result<Option<String>, ApiError> {
        match self.typed(name)? {
            None => Ok(None),
            Some(v) if choices.contains(&v) => Ok(Some(v.to_owned())),
            Some(_) => Err(ApiError::bad(
                name,
                format!("expected one of {}", choices.join(", ")),
            )),
        }
    }

    /// The page size `limit`: default when absent, at most `max`.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        Ok(self
            .int("limit", 1, max as i64)?
            .map(|v| v as usize)
            .unwrap_or(default))
    }

    /// A time range `from_name..to_name` (one ending before it starts matches nothing).
    pub fn range(&self, from_name: &str, to_name: &str) -> Result<TimeRange, ApiError> {
        Ok((self.time(from_name)?, self.time(to_name)?))
    }
}

/// Parses an RFC 3339 time or a date (midnight UTC) given as parameter `name`. The year is
/// written with four digits (0000–9999, what both PostgreSQL and Elasticsearch accept); an
/// offset that moves the instant past either end of that range in UTC is clamped to the end,
/// which selects the same records.
pub fn time(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    let bytes = text.as_bytes();
    let four_digit_year =
        bytes.len() >= 10 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-';
    let parsed = if !four_digit_year {
        None
    } else if bytes.len() == 10 {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .filter(|d| d.format("%Y-%m-%d").to_string() == text)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    } else {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let Some(t) = parsed else {
        return Err(ApiError::bad(
            name,
            "expected an RFC 3339 time (2026-11-23T10:00:00Z) or a date (2026-11-23), four-digit year",
        ));
    };
    let (first, last) = time_limits();
    Ok(t.clamp(first, last))
}

/// The first and last instants of [`YEARS`].
fn time_limits() -> (DateTime<Utc>, DateTime<Utc>) {
    let first = chrono::NaiveDate::from_ymd_opt(*YEARS.start(), 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let last = chrono::NaiveDate::from_ymd_opt(*YEARS.end(), 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (first, last)
}

/// A path segment used as an id: non-empty, at most [`MAX_TEXT`] characters, no control
/// characters.
pub fn id(name: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() || value.chars().count() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(ApiError::bad(
            name,
            format!("must be 1 to {MAX_TEXT} characters without control characters"),
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let e = Params::parse(Some("limit=1&bogus=2"), &["limit"]).unwrap_err();
        assert!(matches!(e, ApiError::BadParameter { ref parameter, .. } if parameter == "bogus"));
        let e = Params::parse(Some("limit=1&limit=2"), &["limit"]).unwrap_err();
        assert!(matches!(e, ApiError::BadParameter { ref parameter, .. } if parameter == "limit"));
    }

    #[test]
    fn values_are_checked() {
        let p = Params::parse(
            Some("limit=500&from=2026-11-23&to=yesterday&n=%ZZ"),
            &["limit", "from", "to", "n"],
        )
        .unwrap();
        assert!(p.limit(20, 100).is_err());
        assert!(p.time("from").unwrap().is_some());
        assert!(p.time("to").is_err());
        for bad in [
            "+10000-01-01",
            "-0001-12-31",
            "10000-01-01T00:00:00Z",
            "2026-1-5",
            "2026-02-30",
        ] {
            assert!(time("t", bad).is_err(), "{bad}");
        }
        for good in [
            "0000-01-01",
            "9999-12-31T23:59:59Z",
            "0001-01-01T05:00:00+05:00",
        ] {
            assert!(time("t", good).is_ok(), "{good}");
        }
        let clamped = time("t", "9999-12-31T23:00:00-05:00").unwrap();
        assert_eq!(clamped.year(), 9999);
        let clamped = time("t", "0000-01-01T00:00:00+01:00").unwrap();
        assert_eq!(clamped.year(), 0);
        let q = Params::parse(Some("limit=&status= a"), &["limit", "status"]).unwrap();
        assert!(q.limit(20, 100).is_err(), "an empty number is not absent");
        assert!(
            q.choice("status", &["a"]).is_err(),
            "typed values are not trimmed"
        );
        assert_eq!(p.text("n").unwrap().as_deref(), Some("%ZZ"));
        assert_eq!(
            Params::parse(None, &[]).unwrap().limit(20, 100).unwrap(),
            20
        );
    }
}
