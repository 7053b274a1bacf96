//! Search projections: read models kept as Elasticsearch documents.
//!
//! A [`SearchProjection`] says which documents an event touches ([`SearchProjection::targets`])
//! and how it changes each one ([`SearchProjection::apply`], a pure merge of the current
//! document and the event). [`SearchSink`] does the rest: it reads the batch's documents
//! (realtime `_mget`), applies the events in memory, writes the changed documents with
//! `if_seq_no`/`if_primary_term` (or `create`), re-reads and re-applies on a 409, and returns
//! the events whose document Elasticsearch rejects; the runtime then dead-letters them and
//! stores the positions (and dead-letter rows) in PostgreSQL. See [`sink`] for the algorithm, [`write`] and [`join`] for
//! its two steps, [`store`] for the calls it makes and [`index`] for versioned indices behind
//! aliases.

pub mod applied;
pub mod client;
pub mod index;
pub mod join;
pub mod sink;
pub mod store;
pub mod write;

#[cfg(test)]
pub mod memory;

use serde_json::Value;

use crate::error::ProjectionError;
use crate::projection::Event;

pub use client::{EsClient, EsError};
pub use sink::SearchSink;

/// The bookkeeping object inside every document (mapping `enabled: false`; readers ignore it).
pub const BOOKKEEPING: &str = "factline";
/// The event ids applied to a document, under [`BOOKKEEPING`] (bounded: see [`applied`]).
pub const APPLIED: &str = "applied";

/// An index of a search projection: its base name and its mapping (the body of the index
/// creation request: `{"settings": …, "mappings": …}`).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    /// Base name, e.g. `order_search`; the index is `{prefix}{base}_v{version}`.
    pub base: String,
    /// The creation body.
    pub body: Value,
}

impl IndexSpec {
    /// An index from its base name and the JSON text of its mapping file.
    pub fn new(base: &str, mapping_json: &str) -> Result<IndexSpec, ProjectionError> {
        let body = serde_json::from_str(mapping_json).map_err(|e| {
            ProjectionError::permanent(format!("mapping of {base} is not JSON: {e}"))
        })?;
        Ok(IndexSpec {
            base: base.to_owned(),
            body,
        })
    }
}

/// A document of a search projection: which index (by base name) and which id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocRef {
    /// The index's base name.
    pub index: String,
    /// The document id.
    pub id: String,
}

impl DocRef {
    /// A reference.
    pub fn new(index: &str, id: impl Into<String>) -> DocRef {
        DocRef {
            index: index.to_owned(),
            id: id.into(),
        }
    }
}

/// A join from the documents of the main index to a side index: each main document whose
/// `field` holds an id gets [`SearchProjection::enrich`]ed with the side document of that id,
/// whenever either of the two changes (also across topics and partitions).
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    /// Keyword field of the main documents holding the side document's id (`customer_id`).
    pub field: String,
    /// Keyword field of the main documents holding their own id, to page through matches
    /// (`order_id`).
    pub id_field: String,
    /// Base name of the side index.
    pub side: String,
    /// The topics whose events write the side documents (without prefix): read first, up to
    /// their end, whenever partitions are assigned ([`crate::runtime::lead`]), so a main
    /// document catching up is enriched when written rather than written again once its side
    /// document arrives.
    pub side_topics: Vec<String>,
}

/// A read model in Elasticsearch.
///
/// # Replay contract
///
/// [`apply`](SearchProjection::apply) and [`enrich`](SearchProjection::enrich) are pure: no
/// clock, no randomness, no calls out. `apply` must be **commutative** for events of one
/// document (whatever order they arrive in — across partitions and topics too — the document
/// ends the same), so keep a timestamp per fact under the `factline` object and let newer facts
/// win. The runtime skips an event whose id is in the document's `factline.applied` list (it
/// adds each applied id there, keeping the newest ones: see [`applied`] for the exact
/// guarantee), so re-applying a batch after a crash changes nothing. `apply` returning `None`
/// deletes the document; the runtime keeps its applied ids in a tombstone (an index no alias
/// points at), so a re-delivered older event does not bring it back.
///
/// # Naming
///
/// The first index of [`indices`](SearchProjection::indices) is the read model: the alias
/// `{prefix}{base}` points at `{prefix}{base}_v{version}` once this version is live. Further
/// indices are internal side indices (e.g. the customers of `order_search`), versioned and
/// dropped with it.
pub trait SearchProjection: Send + Sync + 'static {
    /// The projector name.
    fn name(&self) -> &str;

    /// The read model's version; bump it to rebuild into new indices.
    fn version(&self) -> u32;

    /// The topics consumed, without prefix.
    fn topics(&self) -> Vec<String>;

    /// The event types applied.
    fn event_types(&self) -> Vec<String>;

    /// The indices: the read model first, then side indices.
    fn indices(&self) -> Vec<IndexSpec>;

    /// The documents an event changes. A permanent error dead-letters the record.
    fn targets(&self, event: &Event) -> Result<Vec<DocRef>, ProjectionError>;

    /// The new state of one target document (`None`: delete it), from its current state.
    fn apply(
        &self,
        doc: &DocRef,
        current: Option<Value>,
        event: &Event,
    ) -> Result<Option<Value>, ProjectionError>;

    /// Whether [`apply`](SearchProjection::apply) may return `None` (delete, or leave absent).
    /// Only then does the runtime look up tombstones of missing documents; a projection that
    /// always returns a document answers `false` and saves that lookup per batch (should it
    /// return `None` anyway, the tombstone is written but never consulted).
    fn deletes(&self) -> bool {
        true
    }

    /// Whether every document of the index `base` is written by one event only: its id is
    /// that event's own and [`apply`](SearchProjection::apply) keeps `current` as it is when
    /// the document exists (`event_index`). The runtime then creates such documents without
    /// reading them first: the `create` of one that exists answers 409, and that document is
    /// read and folded as after any conflict. It saves one `_mget` per batch. Only honoured
    /// for a projection that never [`deletes`](SearchProjection::deletes): a missing
    /// document's tombstone must otherwise be read first. The default is `false`.
    fn written_once(&self, base: &str) -> bool {
        let _ = base;
        false
    }

    /// The configuration of a declarative projection, recorded with this version at bootstrap
    /// so the read API serves its view (`/views/...`); `None` (the default) for a projection in
    /// code.
    fn declarative_config(&self) -> Option<&factline_schemas::declarative::DeclarativeConfig> {
        None
    }

    /// The join from the read model to a side index, if any.
    fn join(&self) -> Option<Join> {
        None
    }

    /// A main document brought in line with its side document (`None`: there is none yet).
    /// Must be idempotent: `enrich(enrich(d, s), s) == enrich(d, s)`.
    fn enrich(&self, doc: Value, side: Option<&Value>) -> Value {
        let _ = side;
        doc
    }
}
