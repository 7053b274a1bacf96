//! Turns a [`Record`] into an [`Event`] for the projection, an ignored type, or a poison record.
//!
//! When the registry cannot give a record's writer schema (see [`factline_schemas::codec`]),
//! the record is retried — the batch waits, nothing is skipped — for at most the configured
//! time per schema id ([`RegistryRetry`]), then dead-lettered with the registry's last answer:
//! never a silent stall. Bytes that cannot be read at all are dead-lettered at once.
//!
//! Personal fields (marked in the schema) are decrypted here, before any projection sees the
//! event ([`open_personal_data`]): plaintext while the subject's key exists, the placeholder
//! `[erased]` once it was destroyed; plaintext from before encryption passes unchanged. A key
//! store that cannot answer is retried like a registry outage (the batch waits); a value that
//! is not valid ciphertext is dead-lettered. The record itself (dead letters) stays encrypted.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use factline_keystore::FieldCrypto;
use factline_schemas::{avro_into_json, Envelope, EventCodec};

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
    /// A record for a sink of records ([`Input::Records`](crate::runtime::sink::Input)): not
    /// decoded, kept as read.
    Raw,
}

/// A failure worth retrying (the registry cannot give the writer schema yet).
#[derive(Debug, thiserror::Error)]
#[error("decoding failed transiently: {0}")]
pub struct TransientDecodeError(pub String);

/// How long records are retried while the registry cannot give their writer schema: per
/// schema id, from its first failure until it resolves again.
#[derive(Debug)]
pub struct RegistryRetry {
    bound: Duration,
    failing_since: Mutex<HashMap<Option<u32>, Instant>>,
}

impl RegistryRetry {
    /// Retries each schema id for at most `bound` (zero: dead-letter at once).
    pub fn new(bound: Duration) -> RegistryRetry {
        RegistryRetry {
            bound,
            failing_since: Mutex::new(HashMap::new()),
        }
    }

    fn failing(&self) -> std::sync::MutexGuard<'_, HashMap<Option<u32>, Instant>> {
        match self.failing_since.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records a failure of `schema_id`; returns how long it has been failing.
    fn failed(&self, schema_id: Option<u32>) -> Duration {
        self.failing()
            .entry(schema_id)
            .or_insert_with(Instant::now)
            .elapsed()
    }

    /// The registry gave the schema of `schema_id`: its next failure starts a new period.
    fn resolved(&self, schema_id: Option<u32>) {
        let mut failing = self.failing();
        if !failing.is_empty() {
            failing.remove(&schema_id);
        }
    }
}

/// Decodes one record: envelope from the headers, value through the registry, personal fields
/// decrypted with `crypto` (`None`: left sealed, no data key fetched).
pub async fn decode(
    codec: &EventCodec,
    crypto: Option<&FieldCrypto>,
    wanted: &HashSet<String>,
    record: &Record,
    retry: &RegistryRetry,
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
    let envelope = match Envelope::from_headers(record.headers.iter()) {
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
        Ok(decoded) => {
            retry.resolved(Some(decoded.schema_id));
            decoded
        }
        Err(e) if e.is_transient() => {
            let waited = retry.failed(e.schema_id());
            if waited >= retry.bound {
                return Ok(Decoded::Poison {
                    error: format!(
                        "writer schema unavailable for {} ms, the retry bound: {e}",
                        waited.as_millis()
                    ),
                });
            }
            return Err(TransientDecodeError(format!(
                "{e} (retried for {} ms; dead-lettered after {} ms)",
                waited.as_millis(),
                retry.bound.as_millis()
            )));
        }
        Err(e) => {
            retry.resolved(e.schema_id());
            return Ok(Decoded::Poison {
                error: format!("undecodable value: {e}"),
            });
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
    let mut value = decoded.value;
    if let Some(crypto) = crypto {
        if let Some(error) =
            open_personal_data(codec, crypto, &decoded.event_type, &mut value).await?
        {
            return Ok(Decoded::Poison { error });
        }
    }
    Ok(Decoded::Event(Box::new(Event {
        envelope,
        data: avro_into_json(value),
        key: record.key_str(),
        origin: record.origin.clone(),
        timestamp: record
            .timestamp_ms
            .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis),
        headers: record.headers.clone(),
    })))
}

/// Decrypts the personal fields of `value` (an event of `event_type`) in place. `Err`: retry
/// (the key store cannot answer); `Ok(Some(error))`: the record is poison.
pub async fn open_personal_data(
    codec: &EventCodec,
    crypto: &FieldCrypto,
    event_type: &str,
    value: &mut Value,
) -> Result<Option<String>, TransientDecodeError> {
    let Some(schema) = codec.catalog().event(event_type) else {
        return Ok(None);
    };
    match crypto.open(schema, value).await {
        Ok(()) => Ok(None),
        Err(e) if e.is_transient() => Err(TransientDecodeError(format!(
            "cannot decrypt personal data: {e}"
        ))),
        Err(e) => Ok(Some(format!("undecryptable personal data: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::Origin;

    fn record(payload: &[u8]) -> Record {
        Record {
            origin: Origin {
                topic: "t".into(),
                partition: 0,
                offset: 0,
            },
            key: None,
            payload: Some(payload.to_vec()),
            headers: [
                ("event_id", Some(uuid::Uuid::new_v4().to_string())),
                ("event_type", Some("OrderDelivered".to_owned())),
                ("command_id", Some(uuid::Uuid::new_v4().to_string())),
                ("correlation_id", Some("c".to_owned())),
                ("occurred_at", Some("2026-01-01T00:00:00.000Z".to_owned())),
            ]
            .iter()
            .map(|(name, value)| (*name, value.as_deref().map(str::as_bytes)))
            .collect(),
            timestamp_ms: None,
        }
    }

    /// Field encryption whose key store is never reached (no record here is encrypted).
    fn crypto() -> FieldCrypto {
        let pool = factline_service::postgres::pool(
            "postgres://nobody@127.0.0.1:9/none",
            &factline_service::postgres::PoolSettings::new("decode-test", 1),
        )
        .unwrap();
        let ring =
            factline_keystore::KekRing::parse(&factline_keystore::KekRing::generate_entry("t"))
                .unwrap();
        FieldCrypto::new(factline_keystore::KeyStore::new(
            pool,
            ring,
            &factline_keystore::KeyConfig::default().settings(),
        ))
    }

    fn wanted() -> HashSet<String> {
        ["OrderDelivered".to_owned()].into_iter().collect()
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_retried_then_dead_lettered_after_the_bound() {
        // nothing listens on port 9: every attempt fails at once
        let codec = EventCodec::new("http://127.0.0.1:9");
        let bytes = [0, 0, 0, 0, 42, 2, 0];
        let patient = RegistryRetry::new(Duration::from_secs(3600));
        let e = decode(
            &codec,
            Some(&crypto()),
            &wanted(),
            &record(&bytes),
            &patient,
        )
        .await
        .unwrap_err();
        assert!(e.0.contains("42"), "{e}");
        let impatient = RegistryRetry::new(Duration::ZERO);
        match decode(
            &codec,
            Some(&crypto()),
            &wanted(),
            &record(&bytes),
            &impatient,
        )
        .await
        {
            Ok(Decoded::Poison { error }) => assert!(error.contains("retry bound"), "{error}"),
            other => panic!("not dead-lettered: {other:?}"),
        }
    }

    #[tokio::test]
    async fn unreadable_bytes_are_dead_lettered_at_once() {
        let codec = EventCodec::new("http://127.0.0.1:9");
        let patient = RegistryRetry::new(Duration::from_secs(3600));
        for bytes in [&b"not avro"[..], &[0, 0, 1][..]] {
            let decoded =
                decode(&codec, Some(&crypto()), &wanted(), &record(bytes), &patient).await;
            assert!(matches!(decoded, Ok(Decoded::Poison { .. })), "{decoded:?}");
        }
    }
}
