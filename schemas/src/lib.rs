//! factline's event contract: the Avro schemas and the command catalog embedded in the crate,
//! JSON <-> Avro conversion with precise problems, the event envelope (Kafka headers), position
//! tokens, the Confluent wire format through a schema registry, and the read-model side of the
//! contract: how versioned read models are named ([`read_model`]) and the declarative read
//! model a projector builds and the read API serves ([`declarative`]), and what a dead-letter
//! redrive records ([`redrive`]).
//!
//! ```
//! use factline_schemas::Catalog;
//! let command = Catalog::builtin().command("ShipOrder").unwrap();
//! let body = serde_json::json!({"order_id": "o-1", "carrier": "DHL", "tracking_id": "JD0001"});
//! let event = command.build_event(body, chrono::Utc::now()).unwrap();
//! assert_eq!((event.topic.as_str(), event.key.as_str()), ("orders", "o-1"));
//! ```

mod avro_to_json;
mod avro_write;
mod catalog;
mod codec;
mod command;
pub mod declarative;
mod derived;
mod envelope;
mod json_to_avro;
mod names;
pub mod personal;
mod position;
mod problems;
pub mod read_model;
pub mod redrive;
pub mod registry;
mod rules;
pub mod topics;

pub use avro_to_json::{avro_into_json, avro_to_json};
pub use catalog::{Catalog, CatalogError, EventSchema, BUILTIN_CATALOG_TOML};
pub use codec::{CodecError, DecodedEvent, EventCodec};
pub use command::{BuiltEvent, Command};
pub use derived::Derived;
pub use envelope::{Envelope, EnvelopeError};
pub use json_to_avro::{json_integer, json_to_avro};
pub use personal::PersonalData;
pub use position::{Position, PositionError};
pub use problems::{Problem, Problems};
pub use rules::{Format, Rule};
