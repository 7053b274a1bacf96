//! [`DeclarativeProjection`]: a [`Projection`] whose tables and changes come from a
//! [`DeclarativeConfig`].

use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

use super::config::DeclarativeConfig;
use super::sql::{build, create_table, matches, EnvelopeFields};
use crate::error::ProjectionError;
use crate::projection::{Event, Migration, Projection};

/// A projection described by a TOML file.
#[derive(Debug, Clone)]
pub struct DeclarativeProjection {
    config: DeclarativeConfig,
}

impl DeclarativeProjection {
    /// Wraps a validated configuration.
    pub fn new(config: DeclarativeConfig) -> DeclarativeProjection {
        DeclarativeProjection { config }
    }

    /// The configuration.
    pub fn config(&self) -> &DeclarativeConfig {
        &self.config
    }
}

impl Projection for DeclarativeProjection {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn version(&self) -> u32 {
        self.config.version
    }

    fn topics(&self) -> Vec<String> {
        self.config.topics.clone()
    }

    fn event_types(&self) -> Vec<String> {
        self.config.event_types()
    }

    fn migrations(&self) -> Vec<Migration> {
        self.config
            .tables
            .iter()
            .map(|t| {
                Migration::new(
                    format!("create_{}", t.name),
                    create_table(t, self.config.version),
                )
            })
            .collect()
    }

    fn views(&self) -> Vec<String> {
        self.config.tables.iter().map(|t| t.name.clone()).collect()
    }

    fn declarative_config(&self) -> Option<&DeclarativeConfig> {
        Some(&self.config)
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ProjectionError> {
        let envelope = EnvelopeFields {
            event_id: event.envelope.event_id.to_string(),
            event_type: event.envelope.event_type.clone(),
            occurred_at: event
                .envelope
                .occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        for mapping in self
            .config
            .on
            .iter()
            .filter(|m| m.event_type == event.event_type())
        {
            if !matches(&mapping.when, &event.data) {
                continue;
            }
            let Some(table) = self.config.table(&mapping.table) else {
                return Err(ProjectionError::permanent(format!(
                    "unknown table {}",
                    mapping.table
                )));
            };
            let statement = build(mapping, table, self.config.version, &event.data, &envelope);
            let params: Vec<&(dyn ToSql + Sync)> = statement
                .params
                .iter()
                .map(|p| p as &(dyn ToSql + Sync))
                .collect();
            tx.execute(&statement.sql, &params).await?;
        }
        Ok(())
    }
}
