//! Helpers shared by factline's integration tests, used as a dev-dependency by every crate:
//! the local stack's environment with one clear message when it is missing ([`stack`]),
//! unique names so tests never share topics, schemas or indices ([`names`]), fresh PostgreSQL
//! schemas ([`postgres`]), waits for a condition with a deadline ([`wait`]), service binaries
//! run as child processes ([`process`]) and sample command bodies ([`samples`]).
//!
//! Test code panics on failure by design, so the helpers do too: a helper that cannot do its
//! job ends the test with a message saying what was not possible.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod names;
pub mod postgres;
pub mod process;
pub mod samples;
pub mod stack;
pub mod wait;

pub use names::{short_id, unique};
pub use postgres::{connect, fresh_schema};
pub use stack::env;
pub use wait::{eventually, eventually_blocking};
