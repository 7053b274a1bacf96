//! Avro's binary encoding of a value built for its schema, checked and written in one pass.
//!
//! apache-avro's writer validates a value in one walk, then encodes it in a second, and builds a
//! table of the schema's named types (and one of every record's fields) per value. The write
//! side encodes every event it produces, so this writes the usual case directly: each value is
//! checked against its schema as it is written, and anything this module does not cover (a
//! logical type such as decimal, a record whose fields are not in schema order, a value the
//! schema does not take) is answered with [`NotCovered`], and the caller falls back to
//! apache-avro, which validates and gives the error. The bytes are the same either way (tested
//! against apache-avro below).

use crate::names::Names;
use apache_avro::schema::UuidSchema;
use apache_avro::types::Value;
use apache_avro::Schema;

/// The value (or a part of it) is not one this module writes; use apache-avro.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotCovered;

/// Appends the binary encoding of `value` as `schema` to `out`. On [`NotCovered`], `out` may
/// hold part of the value: truncate it before falling back.
pub(crate) fn write_value(
    schema: &Schema,
    value: &Value,
    out: &mut Vec<u8>,
) -> Result<(), NotCovered> {
    let names = Names::of(schema);
    write(&names, schema, value, out)
}

fn write(
    names: &Names<'_>,
    schema: &Schema,
    value: &Value,
    out: &mut Vec<u8>,
) -> Result<(), NotCovered> {
    match (names.resolve(schema), value) {
        (Schema::Null, Value::Null) => {}
        (Schema::Boolean, Value::Boolean(b)) => out.push(u8::from(*b)),
        (Schema::Int, Value::Int(i))
        | (Schema::Date, Value::Date(i))
        | (Schema::TimeMillis, Value::TimeMillis(i)) => write_long(i64::from(*i), out),
        (Schema::Long, Value::Long(i))
        | (Schema::TimeMicros, Value::TimeMicros(i))
        | (Schema::TimestampMillis, Value::TimestampMillis(i))
        | (Schema::TimestampMicros, Value::TimestampMicros(i))
        | (Schema::LocalTimestampMillis, Value::LocalTimestampMillis(i))
        | (Schema::LocalTimestampMicros, Value::LocalTimestampMicros(i)) => write_long(*i, out),
        (Schema::Float, Value::Float(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (Schema::Double, Value::Double(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (Schema::Bytes, Value::Bytes(bytes)) => write_bytes(bytes, out),
        (Schema::String, Value::String(s)) => write_bytes(s.as_bytes(), out),
        (Schema::Uuid(UuidSchema::String), Value::Uuid(u)) => write_bytes(
            u.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
            out,
        ),
        (Schema::Fixed(fixed), Value::Fixed(size, bytes))
            if *size == fixed.size && bytes.len() == fixed.size =>
        {
            out.extend_from_slice(bytes)
        }
        (Schema::Enum(e), Value::Enum(index, symbol))
            if e.symbols.get(*index as usize) == Some(symbol) =>
        {
            write_long(i64::from(*index), out)
        }
        (Schema::Union(union), Value::Union(index, inner)) => {
            let variant = union.variants().get(*index as usize).ok_or(NotCovered)?;
            write_long(i64::from(*index), out);
            write(names, variant, inner, out)?;
        }
        (Schema::Array(array), Value::Array(items)) => {
            if !items.is_empty() {
                write_long(items.len() as i64, out);
                for item in items {
                    write(names, &array.items, item, out)?;
                }
            }
            out.push(0);
        }
        (Schema::Map(map), Value::Map(entries)) => {
            if !entries.is_empty() {
                write_long(entries.len() as i64, out);
                for (key, item) in entries {
                    write_bytes(key.as_bytes(), out);
                    write(names, &map.types, item, out)?;
                }
            }
            out.push(0);
        }
        (Schema::Record(record), Value::Record(fields)) if fields.len() == record.fields.len() => {
            for (field, (name, item)) in record.fields.iter().zip(fields) {
                if field.name != *name {
                    return Err(NotCovered);
                }
                write(names, &field.schema, item, out)?;
            }
        }
        _ => return Err(NotCovered),
    }
    Ok(())
}

fn write_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn write_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    write_long(bytes.len() as i64, out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn apache(schema: &Schema, value: &Value) -> Vec<u8> {
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap();
        let mut out = Vec::new();
        writer.write_value_ref(&mut out, value).unwrap();
        out
    }

    fn ours(schema: &Schema, value: &Value) -> Result<Vec<u8>, NotCovered> {
        let mut out = Vec::new();
        write_value(schema, value, &mut out).map(|()| out)
    }

    const SCHEMA: &str = r#"{
      "type": "record", "name": "Everything", "namespace": "t",
      "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "bytes", "type": "bytes"},
        {"name": "s", "type": "string"},
        {"name": "u", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "again", "type": "Colour"},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "opt", "type": ["null", "string"]},
        {"name": "items", "type": {"type": "array", "items": {
          "type": "record", "name": "Item", "fields": [{"name": "q", "type": "long"}]}}},
        {"name": "none", "type": {"type": "array", "items": "Item"}},
        {"name": "m", "type": {"type": "map", "values": "int"}}
      ]}"#;

    fn everything(long: i64) -> Value {
        let item = |q| Value::Record(vec![("q".into(), Value::Long(q))]);
        Value::Record(vec![
            ("n".into(), Value::Null),
            ("b".into(), Value::Boolean(true)),
            ("i".into(), Value::Int(-64)),
            ("l".into(), Value::Long(long)),
            ("f".into(), Value::Float(1.5)),
            ("d".into(), Value::Double(-2.25)),
            ("bytes".into(), Value::Bytes(vec![0, 255, 7])),
            ("s".into(), Value::String("héllo".into())),
            (
                "u".into(),
                Value::Uuid(uuid::Uuid::from_u128(0x1234_5678_9abc)),
            ),
            ("day".into(), Value::Date(20_000)),
            ("ms".into(), Value::TimestampMillis(1_764_000_000_000)),
            ("us".into(), Value::TimestampMicros(-1)),
            ("e".into(), Value::Enum(1, "GREEN".into())),
            ("again".into(), Value::Enum(0, "RED".into())),
            ("fx".into(), Value::Fixed(4, vec![1, 2, 3, 4])),
            (
                "opt".into(),
                Value::Union(1, Box::new(Value::String("x".into()))),
            ),
            (
                "items".into(),
                Value::Array(vec![item(1), item(i64::MIN), item(i64::MAX)]),
            ),
            ("none".into(), Value::Array(vec![])),
            (
                "m".into(),
                Value::Map(HashMap::from([("k".to_string(), Value::Int(300))])),
            ),
        ])
    }

    #[test]
    fn writes_the_same_bytes_as_apache_avro() {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        for long in [0, 1, -1, 63, 64, -65, 1 << 40, i64::MIN, i64::MAX] {
            let value = everything(long);
            assert_eq!(
                ours(&schema, &value).unwrap(),
                apache(&schema, &value),
                "{long}"
            );
        }
    }

    #[test]
    fn catalog_events_are_written_as_apache_avro_writes_them() {
        let catalog = crate::Catalog::builtin();
        let bodies = [
            (
                "RegisterCustomer",
                serde_json::json!({"customer_id": "c-1",
                "email": "ada@example.com", "name": "Ada Lovelace"}),
            ),
            (
                "PlaceOrder",
                serde_json::json!({"order_id": "o-1", "customer_id": "c-1",
                "currency": "EUR", "items": [
                    {"sku": "tea-01", "name": "Earl Grey", "quantity": 2, "unit_price_cents": 450},
                    {"sku": "mug-02", "name": "Mug", "quantity": 1, "unit_price_cents": 1200}],
                "shipping_address": {"line1": "12 Baker St", "city": "London",
                    "postal_code": "NW1", "country": "GB"}}),
            ),
            (
                "CancelOrder",
                serde_json::json!({"order_id": "o-1", "reason": "changed my mind"}),
            ),
        ];
        for (name, body) in bodies {
            let command = catalog.command(name).unwrap();
            let event = command
                .build_event(body.clone(), chrono::Utc::now())
                .unwrap();
            let schema = &command.event().schema;
            assert_eq!(
                ours(schema, &event.value).unwrap(),
                apache(schema, &event.value),
                "{name}"
            );
        }
    }

    #[test]
    fn values_the_schema_does_not_take_are_left_to_apache_avro() {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let Value::Record(fields) = everything(1) else {
            unreachable!()
        };
        let with = |name: &str, value: Value| {
            Value::Record(
                fields
                    .iter()
                    .map(|(n, v)| (n.clone(), if n == name { value.clone() } else { v.clone() }))
                    .collect(),
            )
        };
        for wrong in [
            with("i", Value::String("1".into())),
            with("l", Value::Int(1)),
            with("e", Value::Enum(1, "RED".into())),
            with("e", Value::Enum(9, "BLUE".into())),
            with("fx", Value::Fixed(3, vec![1, 2, 3])),
            with("opt", Value::Union(2, Box::new(Value::Null))),
            with("opt", Value::String("bare".into())),
            with("items", Value::Array(vec![Value::Long(1)])),
            Value::Record(fields[1..].to_vec()),
            Value::Record(fields.iter().rev().cloned().collect()),
        ] {
            assert_eq!(ours(&schema, &wrong), Err(NotCovered), "{wrong:?}");
        }
    }
}
