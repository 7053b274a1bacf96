//! Read endpoints for declarative projections, with no code: every table (PostgreSQL) or
//! index (Elasticsearch) a declarative config file declares is served by key
//! (`/views/{name}/{key}`, single-column keys) and as a list filtered on its declared
//! columns (`/views/{name}?column=value&limit=&cursor=`), keyset-paginated by key. Column
//! names come from the config files only; values are always bound parameters.

use std::collections::BTreeMap;
use std::path::Path;

use factline_projectors::declarative::{DeclarativeConfig, SinkKind};

/// One served view.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The view (PostgreSQL) or alias base (Elasticsearch) name.
    pub name: String,
    /// The projector keeping it.
    pub projector: String,
    /// Where it lives.
    pub sink: SinkKind,
    /// The key columns (PostgreSQL primary key, or the Elasticsearch id field).
    pub key: Vec<String>,
    /// Every declared column or field, filterable.
    pub columns: Vec<String>,
}

/// Every declarative view, by name.
#[derive(Debug, Clone, Default)]
pub struct Views {
    /// By view name.
    pub by_name: BTreeMap<String, View>,
}

impl Views {
    /// Loads every `*.toml` of `dir` (a missing directory gives no views).
    pub fn load(dir: &Path) -> Result<Views, String> {
        let mut views = Views::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            tracing::info!(dir = %dir.display(), "no declarative projections directory");
            return Ok(views);
        };
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let config = DeclarativeConfig::load(&path.to_string_lossy())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            views.add(&config);
        }
        tracing::info!(views = ?views.by_name.keys().collect::<Vec<_>>(), "declarative views");
        Ok(views)
    }

    /// Adds the tables or indices of one config.
    pub fn add(&mut self, config: &DeclarativeConfig) {
        match config.sink {
            SinkKind::Postgres => {
                for table in &config.tables {
                    self.by_name.insert(
                        table.name.clone(),
                        View {
                            name: table.name.clone(),
                            projector: config.name.clone(),
                            sink: SinkKind::Postgres,
                            key: table.primary_key.clone(),
                            columns: table.columns.keys().cloned().collect(),
                        },
                    );
                }
            }
            SinkKind::Elasticsearch => {
                for index in &config.indices {
                    self.by_name.insert(
                        index.name.clone(),
                        View {
                            name: index.name.clone(),
                            projector: config.name.clone(),
                            sink: SinkKind::Elasticsearch,
                            key: vec![index.id.clone()],
                            columns: index.fields.keys().cloned().collect(),
                        },
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_configs_become_views() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../projectors/config");
        let views = Views::load(&dir).unwrap();
        let directory = &views.by_name["customer_directory"];
        assert_eq!(directory.key, vec!["customer_id"]);
        assert_eq!(directory.sink, SinkKind::Postgres);
        assert!(directory.columns.contains(&"email".to_string()));
        assert!(Views::load(Path::new("/nonexistent"))
            .unwrap()
            .by_name
            .is_empty());
    }
}
