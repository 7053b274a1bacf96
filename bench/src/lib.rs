//! factline's benchmark harness (`make bench`): starts the services as child processes against
//! the running local stack under a fresh topic prefix, PostgreSQL schema and index prefix,
//! measures every stage against the limit of the system under it in the same run, prints one
//! table and writes the figures as JSON. See README.md, "Performance".

pub mod config;
pub mod data;
pub mod error;
pub mod es;
pub mod kafka;
pub mod load;
pub mod pg;
pub mod report;
pub mod run;
pub mod services;
mod stages;
pub mod targets;

pub use config::{Args, Settings};
pub use error::BenchError;
pub use report::Report;
pub use run::run;
