//! Events on the wire: the Confluent format (magic byte, schema id, Avro body) through a schema
//! registry, using schema_registry_converter's async encoder and decoder (schema ids cached).
//! Encoding auto-registers the embedded schema under `{topic}-{full name}`; decoding fetches the
//! writer's schema by id and resolves the record to the embedded reader schema of its event type,
//! so records written with an older or newer compatible schema read the same.
//!
//! A registry failure while fetching a writer schema (401, 403, 404, 5xx, timeouts, connection
//! errors) may heal — a credential rotation, a proxy, a replica that has not seen a new id yet —
//! so it is reported as transient and never cached: the converter caches non-retriable errors
//! per schema id, and the decoder drops them at once, so the next attempt asks the registry
//! again. Bytes that cannot be read whatever the registry says (no magic byte, truncated, a
//! body the writer schema does not read) are permanent errors.

use crate::avro_to_json::avro_to_json;
use crate::avro_write;
use crate::catalog::Catalog;
use crate::command::BuiltEvent;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Why an event could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached or answered with a server error: retry later.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// The registry refused the request (e.g. 409: the schema is incompatible with the subject).
    #[error("schema registry refused the request (status {status:?}): {message}")]
    RegistryRefused {
        /// The HTTP status, when known.
        status: Option<u16>,
        /// The registry's message.
        message: String,
    },
    /// The bytes are not in the Confluent wire format.
    #[error("not in the confluent wire format: {0}")]
    NotWireFormat(String),
    /// The registry does not know the schema id in the payload (404). Transient: a registry
    /// replica may not have seen a new id yet.
    #[error("unknown schema id {0}")]
    UnknownSchemaId(u32),
    /// The registry did not give the writer schema of an id (401, 403, 5xx, a timeout, no
    /// connection, an answer that is not a schema): transient.
    #[error("schema registry did not give schema id {schema_id} (status {status:?}): {message}")]
    SchemaUnavailable {
        /// The writer's schema id.
        schema_id: u32,
        /// The HTTP status, when there was one.
        status: Option<u16>,
        /// What went wrong.
        message: String,
    },
    /// The event type is not in the catalog (writer record name or requested event type).
    #[error("unknown event type {0}")]
    UnknownEventType(String),
    /// The body does not match the writer schema, or cannot be resolved to the reader schema.
    #[error("cannot read {event_type} (schema id {schema_id}): {message}")]
    Resolution {
        /// The event type.
        event_type: String,
        /// The writer's schema id.
        schema_id: u32,
        /// What went wrong.
        message: String,
    },
    /// The value to encode does not match the event's schema.
    #[error("{event_type} value does not match its schema")]
    InvalidValue {
        /// The event type.
        event_type: String,
    },
}

impl CodecError {
    /// Whether retrying the same operation later may succeed: the registry is unreachable or
    /// failing, or could not give a writer schema; everything else is permanent (bad bytes, an
    /// event type outside the catalog, resolution, a refused registration).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CodecError::RegistryUnavailable(_)
                | CodecError::UnknownSchemaId(_)
                | CodecError::SchemaUnavailable { .. }
        )
    }

    /// The writer's schema id the error is about, when known.
    pub fn schema_id(&self) -> Option<u32> {
        match self {
            CodecError::UnknownSchemaId(id) => Some(*id),
            CodecError::SchemaUnavailable { schema_id, .. }
            | CodecError::Resolution { schema_id, .. } => Some(*schema_id),
            _ => None,
        }
    }
}

/// An event read from the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent {
    /// The short event name: `OrderPlaced`.
    pub event_type: String,
    /// The writer's schema id.
    pub schema_id: u32,
    /// The record, resolved to the embedded (reader) schema of its event type.
    pub value: Value,
}

impl DecodedEvent {
    /// The record as plain JSON (see [`avro_to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        avro_to_json(&self.value)
    }
}

/// Encodes and decodes events through a schema registry. Cheap to clone; Send + Sync.
#[derive(Clone)]
pub struct EventCodec {
    inner: Arc<Inner>,
}

struct Inner {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    catalog: Catalog,
    /// The registered schema id of each event type written to each topic, by topic.
    schema_ids: RwLock<HashMap<String, HashMap<String, u32>>>,
    /// Whether a writer schema (by id) is the reader schema of its event type.
    same_as_reader: RwLock<HashMap<u32, bool>>,
}

impl std::fmt::Debug for EventCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventCodec").finish_non_exhaustive()
    }
}

/// How long one registry call may take before it counts as unavailable.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);

impl EventCodec {
    /// A codec for the built-in catalog against the registry at `registry_url`.
    pub fn new(registry_url: &str) -> EventCodec {
        EventCodec::with_catalog(registry_url, Catalog::builtin().clone())
    }

    /// A codec for `catalog` (e.g. one read with [`Catalog::from_dir`]).
    pub fn with_catalog(registry_url: &str, catalog: Catalog) -> EventCodec {
        let url = registry_url.trim_end_matches('/').to_string();
        let settings = SrSettings::new_builder(url.clone())
            .set_timeout(REGISTRY_TIMEOUT)
            .build()
            .unwrap_or_else(|_| SrSettings::new(url));
        EventCodec::with_settings(settings, catalog)
    }

    /// A codec with full registry settings (several urls, authentication, proxy).
    pub fn with_settings(settings: SrSettings, catalog: Catalog) -> EventCodec {
        EventCodec {
            inner: Arc::new(Inner {
                encoder: AvroEncoder::new(settings.clone()),
                decoder: AvroDecoder::new(settings),
                catalog,
                schema_ids: RwLock::default(),
                same_as_reader: RwLock::default(),
            }),
        }
    }

    /// The catalog this codec reads and writes.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Confluent wire format, subject {topic}-{full_name}, auto-registers the embedded schema.
    pub async fn encode(&self, event: &BuiltEvent) -> Result<Vec<u8>, CodecError> {
        self.encode_value(&event.topic, &event.event_type, &event.value)
            .await
    }

    /// Encodes `value` as the event type `event_type` for `topic`.
    ///
    /// The first event of a type on a topic registers (or looks up) its schema through the
    /// converter; its schema id is kept, and later events are written directly, checked as they
    /// are written (`avro_write`), no copy of the value.
    pub async fn encode_value(
        &self,
        topic: &str,
        event_type: &str,
        value: &Value,
    ) -> Result<Vec<u8>, CodecError> {
        let event = self
            .inner
            .catalog
            .event(event_type)
            .ok_or_else(|| CodecError::UnknownEventType(event_type.to_string()))?;
        let invalid = || CodecError::InvalidValue {
            event_type: event_type.to_string(),
        };
        let Some(schema_id) = self.known_schema_id(topic, event_type) else {
            if !value.validate(&event.schema) {
                return Err(invalid());
            }
            let strategy = SubjectNameStrategy::TopicRecordNameStrategyWithSchema(
                topic.to_string(),
                SuppliedSchema::new(
                    Some(event.full_name.clone()),
                    SchemaType::Avro,
                    event.schema_json.clone(),
                ),
            );
            let result = self
                .inner
                .encoder
                .encode_value(value.clone(), &strategy)
                .await;
            let bytes = result.map_err(|e| {
                let error = registry_error(&e);
                if error.is_transient() {
                    // The library caches non-retriable errors (a 500, say); a transient failure
                    // must not stick.
                    self.inner.encoder.remove_errors_from_cache();
                }
                error
            })?;
            if let Ok((schema_id, _)) = split_wire_format(&bytes) {
                self.remember_schema_id(topic, event_type, schema_id);
            }
            return Ok(bytes);
        };
        let mut bytes = Vec::with_capacity(256);
        bytes.push(0);
        bytes.extend_from_slice(&schema_id.to_be_bytes());
        if avro_write::write_value(&event.schema, value, &mut bytes).is_ok() {
            return Ok(bytes);
        }
        // Not the usual case (or not valid): apache-avro validates and writes it, or says why not.
        bytes.truncate(5);
        let writer = GenericDatumWriter::builder(&event.schema)
            .build()
            .map_err(|_| invalid())?;
        writer
            .write_value_ref(&mut bytes, value)
            .map_err(|_| invalid())?;
        Ok(bytes)
    }

    fn known_schema_id(&self, topic: &str, event_type: &str) -> Option<u32> {
        let ids = self
            .inner
            .schema_ids
            .read()
            .unwrap_or_else(|e| e.into_inner());
        ids.get(topic)?.get(event_type).copied()
    }

    fn remember_schema_id(&self, topic: &str, event_type: &str, schema_id: u32) {
        let mut ids = self
            .inner
            .schema_ids
            .write()
            .unwrap_or_else(|e| e.into_inner());
        ids.entry(topic.to_string())
            .or_default()
            .insert(event_type.to_string(), schema_id);
    }

    /// Fetches the writer schema by id (cached), resolves to the embedded reader schema of that
    /// event type (schema evolution: old and new versions both readable).
    pub async fn decode(&self, payload: &[u8]) -> Result<DecodedEvent, CodecError> {
        let (schema_id, body) = split_wire_format(payload)?;
        let writer = match self.inner.decoder.get_schema(schema_id).await {
            Ok(writer) => writer,
            Err(e) => {
                // The converter caches a non-retriable failure for the id: drop it, so one bad
                // answer never poisons the records that follow.
                self.inner.decoder.remove_errors_from_cache();
                return Err(schema_error(schema_id, &e));
            }
        };
        let full_name = writer
            .parsed
            .name()
            .map(|n| n.fullname(None))
            .unwrap_or_default();
        let event = self
            .inner
            .catalog
            .event_by_full_name(&full_name)
            .ok_or_else(|| CodecError::UnknownEventType(full_name.clone()))?;
        // A writer schema the same as the reader's (the usual case) is read directly: the same
        // value as a resolution, without resolving every record.
        let value = if self.same_as_reader(schema_id, &writer.parsed, &event.schema) {
            read_resolved(&event.schema, None, body)
        } else {
            read_resolved(&writer.parsed, Some(&event.schema), body)
        };
        let value = value.map_err(|message| CodecError::Resolution {
            event_type: event.event_type.clone(),
            schema_id,
            message,
        })?;
        Ok(DecodedEvent {
            event_type: event.event_type.clone(),
            schema_id,
            value,
        })
    }

    /// Whether the writer schema `schema_id` is the reader schema (Avro's parsing canonical
    /// form, so the same bytes), remembered per id.
    fn same_as_reader(&self, schema_id: u32, writer: &Schema, reader: &Schema) -> bool {
        let known = self
            .inner
            .same_as_reader
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(same) = known.get(&schema_id) {
            return *same;
        }
        drop(known);
        let same = writer == reader;
        self.inner
            .same_as_reader
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(schema_id, same);
        same
    }
}

/// Reads an Avro body written with `writer`, resolved to `reader` if given (Avro schema resolution:
/// fields only the writer has are skipped, fields only the reader has take their default, an
/// enum symbol the reader does not know becomes the reader's enum default).
pub(crate) fn read_resolved(
    writer: &Schema,
    reader: Option<&Schema>,
    body: &[u8],
) -> Result<Value, String> {
    let datum_reader = match reader {
        Some(reader) => GenericDatumReader::builder(writer)
            .reader_schema(reader)
            .build(),
        None => GenericDatumReader::builder(writer).build(),
    }
    .map_err(|e| e.to_string())?;
    let mut cursor = body;
    let value = datum_reader
        .read_value(&mut cursor)
        .map_err(|e| e.to_string())?;
    if cursor.is_empty() {
        Ok(value)
    } else {
        Err(format!("{} bytes left after the record", cursor.len()))
    }
}

/// Splits a Confluent-framed payload into (schema id, Avro body).
pub(crate) fn split_wire_format(payload: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    match payload {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [] => Err(CodecError::NotWireFormat("empty payload".into())),
        [0, ..] => Err(CodecError::NotWireFormat(format!(
            "payload too short ({} bytes)",
            payload.len()
        ))),
        [first, ..] => Err(CodecError::NotWireFormat(format!(
            "first byte is {first:#04x}, expected the magic byte 0x00"
        ))),
    }
}

/// The HTTP status in a schema_registry_converter error message, if any.
fn status_of(error: &SRCError) -> Option<u16> {
    let text = error.error.as_str();
    let rest = &text[text.find("status ")? + "status ".len()..];
    rest.get(..3)?.parse().ok()
}

/// A failure to fetch the writer schema of `schema_id`: always transient (see the module doc).
fn schema_error(schema_id: u32, error: &SRCError) -> CodecError {
    let message = match &error.cause {
        Some(cause) => format!("{}: {cause}", error.error),
        None => error.error.clone(),
    };
    let status = status_of(error);
    tracing::warn!(schema_id, ?status, error = %message, "schema registry did not give a writer schema");
    match status {
        Some(404) => CodecError::UnknownSchemaId(schema_id),
        _ => CodecError::SchemaUnavailable {
            schema_id,
            status,
            message,
        },
    }
}

fn registry_error(error: &SRCError) -> CodecError {
    let message = match &error.cause {
        Some(cause) => format!("{}: {cause}", error.error),
        None => error.error.clone(),
    };
    let status = status_of(error);
    let transient =
        error.retriable || matches!(status, Some(s) if s >= 500 || s == 408 || s == 429);
    if transient {
        tracing::warn!(error = %message, "schema registry unavailable");
        CodecError::RegistryUnavailable(message)
    } else {
        CodecError::RegistryRefused { status, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_split_and_garbage_is_permanent() {
        assert_eq!(
            split_wire_format(&[0, 0, 0, 1, 2, 9, 9]).unwrap(),
            (258, &[9u8, 9][..])
        );
        for bad in [&[][..], &[0, 0, 0][..], &[1, 0, 0, 0, 1, 2][..]] {
            let e = split_wire_format(bad).unwrap_err();
            assert!(matches!(e, CodecError::NotWireFormat(_)));
            assert!(!e.is_transient());
        }
    }

    #[test]
    fn registry_errors_are_classified() {
        let unreachable = SRCError::new("http call to schema registry failed", None, true);
        assert!(registry_error(&unreachable).is_transient());
        let server = SRCError::new(
            "HTTP request to schema registry failed with status 500 Internal Server Error",
            None,
            false,
        );
        assert!(registry_error(&server).is_transient());
        let conflict = SRCError::new(
            "HTTP request to schema registry failed with status 409 Conflict",
            Some("incompatible".into()),
            false,
        );
        let e = registry_error(&conflict);
        assert!(!e.is_transient());
        assert!(matches!(
            e,
            CodecError::RegistryRefused {
                status: Some(409),
                ..
            }
        ));
    }

    #[test]
    fn every_failure_to_fetch_a_writer_schema_may_heal() {
        for (status, text) in [
            (401, "401 Unauthorized"),
            (403, "403 Forbidden"),
            (404, "404 Not Found"),
            (500, "500 Internal Server Error"),
        ] {
            let error = SRCError::new(
                &format!("HTTP request to schema registry failed with status {text}"),
                None,
                false,
            );
            let e = schema_error(7, &error);
            assert!(e.is_transient(), "{status}: {e:?}");
            assert_eq!(e.schema_id(), Some(7));
        }
        let garbage = SRCError::new("could not parse to RawRegisteredSchema", None, false);
        assert!(schema_error(7, &garbage).is_transient());
        assert_eq!(
            schema_error(
                7,
                &SRCError::new("failed with status 404 Not Found", None, false)
            ),
            CodecError::UnknownSchemaId(7)
        );
    }

    fn write(schema: &Schema, value: Value) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    #[test]
    fn a_newer_currency_symbol_reads_as_unknown_with_the_embedded_schema() {
        let reader = &Catalog::builtin().event("OrderPlaced").unwrap().schema;
        let mut json: serde_json::Value =
            serde_json::from_str(&Catalog::builtin().event("OrderPlaced").unwrap().schema_json)
                .unwrap();
        let symbols = json["fields"][2]["type"]["symbols"].as_array_mut().unwrap();
        symbols.insert(0, serde_json::json!("BRL"));
        let writer = Schema::parse(&json).unwrap();
        let mut value = Catalog::builtin()
            .command("PlaceOrder")
            .unwrap()
            .build_event(
                serde_json::json!({"order_id": "o", "customer_id": "c", "currency": "EUR",
                    "items": [{"sku": "s", "name": "n", "quantity": 1, "unit_price_cents": 1}],
                    "shipping_address": {"line1": "l", "city": "c", "postal_code": "p", "country": "GB"}}),
                chrono::Utc::now(),
            )
            .unwrap()
            .value;
        let Value::Record(fields) = &mut value else {
            panic!()
        };
        fields[2].1 = Value::Enum(0, "BRL".into());
        let bytes = write(&writer, value);
        let read = read_resolved(&writer, Some(reader), &bytes).unwrap();
        assert_eq!(
            avro_to_json(&read)["currency"],
            serde_json::json!("UNKNOWN")
        );
    }

    #[test]
    fn trailing_bytes_are_a_resolution_error() {
        let schema = &Catalog::builtin().event("OrderDelivered").unwrap().schema;
        let mut bytes = write(
            schema,
            Value::Record(vec![
                ("order_id".into(), Value::String("o".into())),
                ("delivered_at".into(), Value::TimestampMillis(1)),
            ]),
        );
        assert!(read_resolved(schema, Some(schema), &bytes).is_ok());
        bytes.push(0);
        assert!(read_resolved(schema, Some(schema), &bytes).is_err());
    }

    #[tokio::test]
    async fn unreachable_registry_is_transient() {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
        let codec = EventCodec::new("http://127.0.0.1:9");
        let e = codec.decode(&[0, 0, 0, 0, 1, 2]).await.unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        let command = Catalog::builtin().command("DeliverOrder").unwrap();
        let event = command
            .build_event(serde_json::json!({"order_id": "o-1"}), chrono::Utc::now())
            .unwrap();
        let e = codec.encode(&event).await.unwrap_err();
        assert!(e.is_transient(), "{e:?}");
    }

    #[tokio::test]
    async fn unknown_event_type_and_invalid_value_are_permanent() {
        let codec = EventCodec::new("http://127.0.0.1:9");
        let e = codec
            .encode_value("t", "Nope", &Value::Null)
            .await
            .unwrap_err();
        assert_eq!(e, CodecError::UnknownEventType("Nope".into()));
        assert!(!e.is_transient());
        let e = codec
            .encode_value("t", "OrderDelivered", &Value::Record(vec![]))
            .await
            .unwrap_err();
        assert!(matches!(e, CodecError::InvalidValue { .. }));
        assert!(!e.is_transient());
    }
}
