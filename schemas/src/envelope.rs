//! The event envelope: the Kafka headers every event carries (`event_id`, `event_type`,
//! `command_id`, `correlation_id`, `causation_id`, `occurred_at`, `traceparent`).

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// Why headers do not make an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A required header is absent (or has no value).
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header's value is not valid.
    #[error("invalid header {name}: {reason}")]
    Invalid {
        /// The header.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The metadata of one event, carried in Kafka headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The event's id (derived from the client's `Idempotency-Key` when given).
    pub event_id: Uuid,
    /// The short event name: `OrderPlaced`.
    pub event_type: String,
    /// The id of the command that recorded the event.
    pub command_id: Uuid,
    /// Groups every event of one business flow.
    pub correlation_id: String,
    /// The id of what caused this event (a previous event or command), if any.
    pub causation_id: Option<String>,
    /// When the command was accepted (UTC, millisecond precision on the wire).
    pub occurred_at: DateTime<Utc>,
    /// W3C trace context of the request, if any.
    pub traceparent: Option<String>,
}

/// The header names, in the order [`Envelope::to_headers`] writes them.
pub const HEADER_NAMES: [&str; 7] = [
    "event_id",
    "event_type",
    "command_id",
    "correlation_id",
    "causation_id",
    "occurred_at",
    "traceparent",
];

impl Envelope {
    /// Header names exactly: event_id, event_type, command_id, correlation_id, causation_id,
    /// occurred_at (RFC 3339, millisecond precision, UTC), traceparent; absent optionals omitted.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(HEADER_NAMES.len());
        headers.extend([
            ("event_id", self.event_id.to_string()),
            ("event_type", self.event_type.clone()),
            ("command_id", self.command_id.to_string()),
            ("correlation_id", self.correlation_id.clone()),
        ]);
        if let Some(causation_id) = &self.causation_id {
            headers.push(("causation_id", causation_id.clone()));
        }
        headers.push((
            "occurred_at",
            self.occurred_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        ));
        if let Some(traceparent) = &self.traceparent {
            headers.push(("traceparent", traceparent.clone()));
        }
        headers
    }

    /// Reads an envelope from Kafka headers (name, value). Unknown headers are ignored; when a
    /// header repeats, the first one counts.
    pub fn from_headers<'a, I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>>(
        headers: I,
    ) -> Result<Envelope, EnvelopeError> {
        let mut values: [Option<&'a [u8]>; 7] = [None; 7];
        for (name, value) in headers {
            if let Some(i) = HEADER_NAMES.iter().position(|n| *n == name) {
                if values[i].is_none() {
                    values[i] = value;
                }
            }
        }
        let text = |i: usize| -> Result<Option<String>, EnvelopeError> {
            values[i]
                .map(|bytes| {
                    String::from_utf8(bytes.to_vec()).map_err(|_| EnvelopeError::Invalid {
                        name: HEADER_NAMES[i],
                        reason: "not UTF-8".into(),
                    })
                })
                .transpose()
        };
        let required = |i: usize| -> Result<String, EnvelopeError> {
            match text(i)? {
                Some(s) if !s.is_empty() => Ok(s),
                _ => Err(EnvelopeError::Missing(HEADER_NAMES[i])),
            }
        };
        let uuid = |i: usize| -> Result<Uuid, EnvelopeError> {
            let s = required(i)?;
            Uuid::parse_str(&s).map_err(|e| EnvelopeError::Invalid {
                name: HEADER_NAMES[i],
                reason: e.to_string(),
            })
        };
        let occurred_at = required(5)?;
        let occurred_at = DateTime::parse_from_rfc3339(&occurred_at)
            .map_err(|e| EnvelopeError::Invalid {
                name: "occurred_at",
                reason: e.to_string(),
            })?
            .with_timezone(&Utc);
        Ok(Envelope {
            event_id: uuid(0)?,
            event_type: required(1)?,
            command_id: uuid(2)?,
            correlation_id: required(3)?,
            causation_id: text(4)?.filter(|s| !s.is_empty()),
            occurred_at,
            traceparent: text(6)?.filter(|s| !s.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            event_id: Uuid::new_v4(),
            event_type: "OrderPlaced".into(),
            command_id: Uuid::new_v4(),
            correlation_id: "corr-1".into(),
            causation_id: Some("cause-1".into()),
            occurred_at: DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123Z")
                .unwrap()
                .with_timezone(&Utc),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        }
    }

    fn round_trip(e: &Envelope) -> Result<Envelope, EnvelopeError> {
        let headers = e.to_headers();
        Envelope::from_headers(headers.iter().map(|(k, v)| (*k, Some(v.as_bytes()))))
    }

    #[test]
    fn headers_round_trip() {
        let e = envelope();
        let headers = e.to_headers();
        let names: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, HEADER_NAMES);
        assert!(headers.contains(&("occurred_at", "2026-11-22T10:00:00.123Z".to_string())));
        assert_eq!(round_trip(&e).unwrap(), e);
    }

    #[test]
    fn absent_optionals_are_omitted_and_round_trip() {
        let e = Envelope {
            causation_id: None,
            traceparent: None,
            ..envelope()
        };
        let names: Vec<&str> = e.to_headers().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "event_id",
                "event_type",
                "command_id",
                "correlation_id",
                "occurred_at"
            ]
        );
        assert_eq!(round_trip(&e).unwrap(), e);
    }

    #[test]
    fn occurred_at_is_written_with_millisecond_precision_in_utc() {
        let mut e = envelope();
        e.occurred_at = DateTime::parse_from_rfc3339("2026-11-22T11:00:00.123456+01:00")
            .unwrap()
            .with_timezone(&Utc);
        let headers = e.to_headers();
        assert!(headers.contains(&("occurred_at", "2026-11-22T10:00:00.123Z".to_string())));
    }

    #[test]
    fn missing_and_invalid_headers_are_named() {
        let e = envelope();
        let headers = e.to_headers();
        let without = |name: &str| {
            Envelope::from_headers(
                headers
                    .iter()
                    .filter(|(k, _)| *k != name)
                    .map(|(k, v)| (*k, Some(v.as_bytes()))),
            )
        };
        assert_eq!(
            without("event_type"),
            Err(EnvelopeError::Missing("event_type"))
        );
        assert_eq!(
            without("occurred_at"),
            Err(EnvelopeError::Missing("occurred_at"))
        );
        let bad = Envelope::from_headers(headers.iter().map(|(k, v)| {
            (
                *k,
                Some(if *k == "event_id" {
                    "nope".as_bytes()
                } else {
                    v.as_bytes()
                }),
            )
        }));
        assert!(matches!(
            bad,
            Err(EnvelopeError::Invalid {
                name: "event_id",
                ..
            })
        ));
        let not_utf8: &[u8] = &[0xff, 0xfe];
        let bad = Envelope::from_headers(headers.iter().map(|(k, v)| {
            (
                *k,
                Some(if *k == "correlation_id" {
                    not_utf8
                } else {
                    v.as_bytes()
                }),
            )
        }));
        assert!(matches!(
            bad,
            Err(EnvelopeError::Invalid {
                name: "correlation_id",
                ..
            })
        ));
    }

    #[test]
    fn unknown_headers_are_ignored() {
        let e = envelope();
        let mut headers: Vec<(&str, Option<&[u8]>)> =
            vec![("x-other", Some(b"1")), ("dlq.error", None)];
        let owned = e.to_headers();
        headers.extend(owned.iter().map(|(k, v)| (*k, Some(v.as_bytes()))));
        assert_eq!(Envelope::from_headers(headers).unwrap(), e);
    }
}
