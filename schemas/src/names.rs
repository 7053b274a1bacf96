//! Named Avro types (records, enums, fixed) by full name, so a `Schema::Ref` to a type defined
//! earlier in the same schema can be followed.

use apache_avro::Schema;
use std::collections::HashMap;
use std::sync::OnceLock;

/// The named types defined in one schema, by full name. They are collected at the first
/// `Schema::Ref` met, so walking a schema without references (the usual case, once per
/// command or event) builds no table.
#[derive(Debug, Clone)]
pub(crate) struct Names<'s> {
    root: &'s Schema,
    by_name: OnceLock<HashMap<String, &'s Schema>>,
}

impl<'s> Names<'s> {
    /// The named types of `schema`.
    pub(crate) fn of(schema: &'s Schema) -> Names<'s> {
        Names {
            root: schema,
            by_name: OnceLock::new(),
        }
    }

    fn by_name(&self) -> &HashMap<String, &'s Schema> {
        self.by_name.get_or_init(|| {
            let mut by_name = HashMap::new();
            collect(self.root, &mut by_name);
            by_name
        })
    }

    /// `schema` itself, or the named type it refers to.
    pub(crate) fn resolve<'a>(&'a self, schema: &'a Schema) -> &'a Schema {
        match schema {
            Schema::Ref { name } => self
                .by_name()
                .get(&name.fullname(None))
                .copied()
                .unwrap_or(schema),
            other => other,
        }
    }
}

fn collect<'s>(schema: &'s Schema, by_name: &mut HashMap<String, &'s Schema>) {
    match schema {
        Schema::Record(record) => {
            by_name.insert(record.name.fullname(None), schema);
            for field in &record.fields {
                collect(&field.schema, by_name);
            }
        }
        Schema::Enum(e) => {
            by_name.insert(e.name.fullname(None), schema);
        }
        Schema::Fixed(f) => {
            by_name.insert(f.name.fullname(None), schema);
        }
        Schema::Array(a) => collect(&a.items, by_name),
        Schema::Map(m) => collect(&m.types, by_name),
        Schema::Union(u) => {
            for variant in u.variants() {
                collect(variant, by_name);
            }
        }
        _ => {}
    }
}

/// A short, human description of what a schema expects, for problem messages.
pub(crate) fn describe_schema(names: &Names<'_>, schema: &Schema) -> String {
    match names.resolve(schema) {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int (32-bit integer)".into(),
        Schema::Long => "long (64-bit integer)".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Uuid(_) => "uuid string".into(),
        Schema::Array(a) => format!("array of {}", describe_schema(names, &a.items)),
        Schema::Map(m) => format!("object with {} values", describe_schema(names, &m.types)),
        Schema::Union(u) => {
            let parts: Vec<String> = u
                .variants()
                .iter()
                .map(|v| describe_schema(names, v))
                .collect();
            parts.join(" or ")
        }
        Schema::Record(r) => format!("object ({})", r.name.name()),
        Schema::Enum(e) => format!("one of {}", e.symbols.join(", ")),
        Schema::Fixed(f) => format!("fixed ({} bytes)", f.size),
        Schema::Date => "date string (YYYY-MM-DD)".into(),
        Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimestampNanos => {
            "RFC 3339 timestamp string".into()
        }
        other => format!("{other:?}"),
    }
}
