//! factline's write side: producers send commands over HTTP (`POST /commands/{name}` or the
//! batch endpoint `POST /commands`); each is validated against the catalog, encoded as Avro
//! (Confluent wire format) and produced to Kafka with an idempotent, `acks=all` producer. `202`
//! is answered only after the broker acknowledged; failures say whether anything was written.
//!
//! The library exposes [`Config`], [`app`] (the router over an [`AppState`]) and [`run`];
//! `main.rs` only loads the configuration, sets up tracing and calls [`run`].

pub mod auth;
pub mod batch;
pub mod budget;
pub mod config;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod ingest;
pub mod openapi;
pub mod producer;
pub mod request_meta;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;

pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use ingest::Accepted;
pub use routes::app;
pub use server::{run, Server};
pub use state::{AppState, StartError};
