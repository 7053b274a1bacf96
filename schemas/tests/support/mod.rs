//! Helpers shared by the integration tests: service addresses from the environment, unique
//! names, and temporary copies of the schema directory with one schema changed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value as Json;
use std::path::{Path, PathBuf};

pub use factline_testkit::env;

/// A fresh topic prefix, so tests never share topics or subjects.
pub fn unique_prefix(test: &str) -> String {
    format!("t-{test}-{}-", uuid::Uuid::new_v4().simple())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// A temporary copy of `schemas/` (catalog.toml and avro/) where `OrderPlaced.avsc` is changed
/// by `change`. Removed when dropped.
pub struct SchemaDir(pub PathBuf);

impl SchemaDir {
    /// Copies the schema directory and applies `change` to OrderPlaced.avsc.
    pub fn with_order_placed(change: impl FnOnce(&mut Json)) -> SchemaDir {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::temp_dir().join(format!("factline-schemas-{}", uuid::Uuid::new_v4()));
        copy_dir(&root.join("avro"), &dir.join("avro"));
        std::fs::copy(root.join("catalog.toml"), dir.join("catalog.toml")).unwrap();
        let path = dir.join("avro/orders/OrderPlaced.avsc");
        let mut schema: Json =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        change(&mut schema);
        std::fs::write(&path, serde_json::to_string_pretty(&schema).unwrap()).unwrap();
        SchemaDir(dir)
    }
}

impl Drop for SchemaDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Adds a field to a record schema (after the last field).
pub fn add_field(schema: &mut Json, field: Json) {
    schema["fields"].as_array_mut().unwrap().push(field);
}
