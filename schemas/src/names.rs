//! Named Avro types (records, enums, fixed) by full name, so a `Schema::Ref` to a type defined
//! earlier in the same schema can be followed.

use apache_avro::Schema;
use std::collections::HashMap;

/// The named types defined in one schema, by full name.
#[derive(Debug, Default, Clone)]
pub(crate) struct Names<'s>(HashMap<String, &'s Schema>);

impl<'s> Names<'s> {
    /// Collects every named type of `schema`.
    pub(crate) fn of(schema: &'s Schema) -> Names<'s> {
        let mut names = Names::default();
        names.collect(schema);
        names
    }

    fn collect(&mut self, schema: &'s Schema) {
        match schema {
            Schema::Record(record) => {
                self.0.insert(record.name.fullname(None), schema);
                for field in &record.fields {
                    self.collect(&field.schema);
                }
            }
            Schema::Enum(e) => {
                self.0.insert(e.name.fullname(None), schema);
            }
            Schema::Fixed(f) => {
                self.0.insert(f.name.fullname(None), schema);
            }
            Schema::Array(a) => self.collect(&a.items),
            Schema::Map(m) => self.collect(&m.types),
            Schema::Union(u) => {
                for variant in u.variants() {
                    self.collect(variant);
                }
            }
            _ => {}
        }
    }

    /// `schema` itself, or the named type it refers to.
    pub(crate) fn resolve<'a>(&'a self, schema: &'a Schema) -> &'a Schema {
        match schema {
            Schema::Ref { name } => self.0.get(&name.fullname(None)).copied().unwrap_or(schema),
            other => other,
        }
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
