//! Turns a [`Record`] into an [`Event`] for the projection, an ignored type, or a poison record.

use std::collections::HashSet;

use factline_schemas::{avro_to_json, Envelope, EventCodec};

use crate::projection::Event;
use crate::record::Record;

/// What a record is to a projection.
#[derive(Debug)]
pub enum Decoded {
    /// An event the projection wants.
    Event(Box<Event>),
    /// An event type the projection does not consume: counted and skipped.
    Ignored {
        /// The `event_type` header.
        event_type: String,
    },
    /// A record that cannot be read: dead-lettered.
    Poison {
        /// Why.
        error: String,
    },
}

/// A failure worth retrying (the registry is unreachable).
#[derive(Debug, thiserror::Error)]
#[error("decoding failed transiently: {0}")]
pub struct TransientDecodeError(pub String);

/// Decodes one record: envelope from the headers, value through the registry.
pub async fn decode(
    codec: &EventCodec,
    wanted: &HashSet<String>,
    record: &Record,
) -> Result<Decoded, TransientDecodeError> {
    if let Some(event_type) = record
        .header("event_type")
        .and_then(|v| std::str::from_utf8(v).ok())
    {
        if !wanted.contains(event_type) {
            return Ok(Decoded::Ignored {
                event_type: event_type.to_owned(),
            });
        }
    }
    let envelope = match Envelope::from_headers(
        record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref())),
    ) {
        Ok(envelope) => envelope,
        Err(e) => {
            return Ok(Decoded::Poison {
                error: format!("invalid envelope: {e}"),
            })
        }
    };
    let Some(payload) = record.payload.as_deref() else {
        return Ok(Decoded::Poison {
            error: "record has no value".to_owned(),
        });
    };
    let decoded = match codec.decode(payload).await {
        Ok(decoded) => decoded,
        Err(e) if e.is_transient() => return Err(TransientDecodeError(e.to_string())),
        Err(e) => {
            return Ok(Decoded::Poison {
                error: format!("undecodable value: {e}"),
            })
        }
    };
    if decoded.event_type != envelope.event_type {
        return Ok(Decoded::Poison {
            error: format!(
                "event_type header {} does not match the value's schema {}",
                envelope.event_type, decoded.event_type
            ),
        });
    }
    let data = avro_to_json(&decoded.value);
    Ok(Decoded::Event(Box::new(Event {
        envelope,
        value: decoded.value,
        data,
        key: record.key_str(),
        origin: record.origin.clone(),
        timestamp: record
            .timestamp_ms
            .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis),
        headers: record
            .headers
            .iter()
            .map(|(k, v)| {
                let value = v
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                (k.clone(), value.into_owned())
            })
            .collect(),
    })))
}
