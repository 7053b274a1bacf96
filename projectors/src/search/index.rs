//! Versioned indices behind an alias: a search projection's indices are named
//! `{prefix}{base}_v{version}`; readers query the alias `{prefix}{base}` of the first (main)
//! index, which points at the live version. A rebuild fills the new version's indices, then
//! swaps the alias in one `_aliases` call and deletes the old version's indices.

use serde_json::{json, Value};

use super::client::{EsClient, EsError};
use super::{IndexSpec, BOOKKEEPING};

/// The indices of one projector version.
#[derive(Debug, Clone, PartialEq)]
pub struct Indices {
    prefix: String,
    version: u32,
    specs: Vec<IndexSpec>,
}

impl Indices {
    /// The indices of `specs` (main first) for a version, under a name prefix.
    pub fn new(prefix: &str, version: u32, specs: Vec<IndexSpec>) -> Indices {
        Indices {
            prefix: prefix.to_ascii_lowercase(),
            version,
            specs,
        }
    }

    /// The base name of the main index.
    pub fn main_base(&self) -> &str {
        self.specs
            .first()
            .map(|s| s.base.as_str())
            .unwrap_or_default()
    }

    /// The concrete index of a base name in this version: `{prefix}{base}_v{version}`.
    pub fn index(&self, base: &str) -> String {
        self.index_of(base, self.version)
    }

    /// The concrete index of a base name in another version.
    pub fn index_of(&self, base: &str, version: u32) -> String {
        factline_schemas::read_model::versioned_index(&self.prefix, base, version)
    }

    /// The alias readers query: `{prefix}{main base}`.
    pub fn alias(&self) -> String {
        format!("{}{}", self.prefix, self.main_base())
    }

    /// The tombstone index of this version: `{prefix}{main base}_tombstones_v{version}`. It
    /// holds what a deleted document had applied (its `factline` bookkeeping), one document
    /// per deleted document ([`tombstone_id`]), so a re-delivered older event cannot recreate
    /// it. No alias points at it: readers never see tombstones.
    pub fn tombstones(&self) -> String {
        self.tombstones_of(self.version)
    }

    fn tombstones_of(&self, version: u32) -> String {
        format!("{}{}_tombstones_v{version}", self.prefix, self.main_base())
    }

    /// Creates this version's indices (and its tombstone index) that do not exist yet. The
    /// `factline` bookkeeping object is added to each mapping (not indexed) if the mapping does
    /// not declare it.
    pub async fn create(&self, client: &EsClient) -> Result<(), EsError> {
        let tombstones = (
            self.tombstones(),
            with_bookkeeping(&json!({"mappings": {"dynamic": false}})),
        );
        let indices = self
            .specs
            .iter()
            .map(|spec| (self.index(&spec.base), with_bookkeeping(&spec.body)))
            .chain(std::iter::once(tombstones));
        for (index, body) in indices {
            if client.create_index(&index, &body).await? {
                tracing::info!(%index, "index created");
            }
        }
        Ok(())
    }

    /// Deletes a version's indices (its tombstone index too).
    pub async fn delete_version(&self, client: &EsClient, version: u32) -> Result<(), EsError> {
        let indices = self
            .specs
            .iter()
            .map(|spec| self.index_of(&spec.base, version))
            .chain(std::iter::once(self.tombstones_of(version)));
        for index in indices {
            client.delete_index(&index).await?;
            tracing::info!(%index, "index deleted");
        }
        Ok(())
    }

    /// Points the alias at this version's main index (atomically removing it elsewhere).
    pub async fn point_alias(&self, client: &EsClient) -> Result<(), EsError> {
        client
            .point_alias(&self.alias(), &self.index(self.main_base()))
            .await
    }
}

/// The id of a document's tombstone: `{index base}/{document id}` (base names hold no `/`).
pub fn tombstone_id(base: &str, id: &str) -> String {
    format!("{base}/{id}")
}

/// The index creation body with `mappings.properties.factline = {type: object, enabled: false}`.
pub fn with_bookkeeping(body: &Value) -> Value {
    let mut body = body.clone();
    if !body.is_object() {
        body = json!({});
    }
    let properties = body
        .as_object_mut()
        .map(|b| b.entry("mappings").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
        .map(|m| m.entry("properties").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut);
    if let Some(properties) = properties {
        properties
            .entry(BOOKKEEPING)
            .or_insert_with(|| json!({"type": "object", "enabled": false}));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_versioned_and_prefixed() {
        let specs = vec![
            IndexSpec {
                base: "order_search".into(),
                body: json!({}),
            },
            IndexSpec {
                base: "order_search_customers".into(),
                body: json!({}),
            },
        ];
        let indices = Indices::new("T1_", 2, specs);
        assert_eq!(indices.alias(), "t1_order_search");
        assert_eq!(indices.index("order_search"), "t1_order_search_v2");
        assert_eq!(
            indices.index_of("order_search_customers", 1),
            "t1_order_search_customers_v1"
        );
    }

    #[test]
    fn the_bookkeeping_object_is_added_unindexed() {
        let body =
            with_bookkeeping(&json!({"mappings": {"properties": {"a": {"type": "keyword"}}}}));
        assert_eq!(
            body["mappings"]["properties"]["factline"],
            json!({"type": "object", "enabled": false})
        );
        assert_eq!(body["mappings"]["properties"]["a"]["type"], "keyword");
    }
}
