//! Fields the write side derives instead of taking them from the client, declared in the catalog:
//! `occurred_at` (the command's time) and `sum_of_products` (e.g. an order's total).

use crate::json_to_avro::json_integer;
use crate::names::Names;
use crate::problems::{JsonPath, Problem};
use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value as Json;

/// One derived top-level field of an event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Derived {
    /// The field is the command's `occurred_at` (a `timestamp-millis` field).
    OccurredAt {
        /// The derived field.
        field: String,
    },
    /// The field is the sum, over the array field `over`, of the product of the integer fields
    /// `product_of` of each element (an `int` or `long` field).
    SumOfProducts {
        /// The derived field.
        field: String,
        /// The top-level array of records to sum over.
        over: String,
        /// The integer fields of each element to multiply.
        product_of: Vec<String>,
    },
}

impl Derived {
    /// The name of the derived top-level field.
    pub fn field(&self) -> &str {
        match self {
            Derived::OccurredAt { field } | Derived::SumOfProducts { field, .. } => field,
        }
    }

    /// Checks the declaration against the event's record schema. Returns every mistake.
    pub(crate) fn check_against(&self, names: &Names<'_>, schema: &Schema) -> Vec<String> {
        let Schema::Record(record) = names.resolve(schema) else {
            return vec!["the event schema is not a record".into()];
        };
        let field_schema = |name: &str| {
            record
                .lookup
                .get(name)
                .map(|&i| names.resolve(&record.fields[i].schema))
        };
        let Some(target) = field_schema(self.field()) else {
            return vec![format!(
                "derived field {:?} is not a field of {}",
                self.field(),
                record.name.fullname(None)
            )];
        };
        let mut errors = Vec::new();
        match self {
            Derived::OccurredAt { field } => {
                if !matches!(target, Schema::TimestampMillis) {
                    errors.push(format!(
                        "derived field {field:?} (occurred_at) must be timestamp-millis"
                    ));
                }
            }
            Derived::SumOfProducts {
                field,
                over,
                product_of,
            } => {
                if !matches!(target, Schema::Long | Schema::Int) {
                    errors.push(format!(
                        "derived field {field:?} (a sum) must be int or long"
                    ));
                }
                if product_of.is_empty() {
                    errors.push(format!("derived field {field:?}: product_of is empty"));
                }
                match field_schema(over) {
                    Some(Schema::Array(a)) => match names.resolve(&a.items) {
                        Schema::Record(item) => {
                            for factor in product_of {
                                let ok = item.lookup.get(factor).is_some_and(|&i| {
                                    matches!(
                                        names.resolve(&item.fields[i].schema),
                                        Schema::Int | Schema::Long
                                    )
                                });
                                if !ok {
                                    errors.push(format!(
                                        "derived field {field:?}: {over}[].{factor} is not an int or long field"
                                    ));
                                }
                            }
                        }
                        _ => errors.push(format!(
                            "derived field {field:?}: {over:?} is not an array of records"
                        )),
                    },
                    _ => errors.push(format!(
                        "derived field {field:?}: {over:?} is not a top-level array field"
                    )),
                }
            }
        }
        errors
    }

    /// Computes the value from the client body. Elements with missing or non-integer factors
    /// count as zero: the schema check reports those and the event is not built.
    pub(crate) fn compute(
        &self,
        field_schema: &Schema,
        body: &Json,
        occurred_at: DateTime<Utc>,
    ) -> Result<Value, Problem> {
        match self {
            Derived::OccurredAt { .. } => {
                Ok(Value::TimestampMillis(occurred_at.timestamp_millis()))
            }
            Derived::SumOfProducts {
                over, product_of, ..
            } => {
                let overflow = || {
                    Problem::new(
                        JsonPath::root().key(over).to_string(),
                        format!("the sum of {} overflows", product_of.join(" * ")),
                    )
                    .expected(format!(
                        "a {} that fits its {} field",
                        self.field(),
                        schema_kind(field_schema)
                    ))
                };
                let mut total: i64 = 0;
                if let Some(items) = body.get(over).and_then(Json::as_array) {
                    for item in items {
                        let mut product: i64 = 1;
                        for factor in product_of {
                            let x = match item.get(factor) {
                                Some(Json::Number(n)) => json_integer(n).unwrap_or(0),
                                _ => 0,
                            };
                            product = product.checked_mul(x).ok_or_else(overflow)?;
                        }
                        total = total.checked_add(product).ok_or_else(overflow)?;
                    }
                }
                match field_schema {
                    Schema::Int => i32::try_from(total).map(Value::Int).map_err(|_| overflow()),
                    _ => Ok(Value::Long(total)),
                }
            }
        }
    }
}

fn schema_kind(schema: &Schema) -> &'static str {
    match schema {
        Schema::Int => "32-bit",
        _ => "64-bit",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sum() -> Derived {
        Derived::SumOfProducts {
            field: "total".into(),
            over: "items".into(),
            product_of: vec!["q".into(), "p".into()],
        }
    }

    #[test]
    fn sums_products() {
        let body = json!({"items": [{"q": 2, "p": 450}, {"q": 1, "p": 100}]});
        assert_eq!(
            sum().compute(&Schema::Long, &body, Utc::now()),
            Ok(Value::Long(1000))
        );
    }

    #[test]
    fn overflow_is_a_problem_not_a_wrap() {
        let body = json!({"items": [{"q": 2, "p": i64::MAX}]});
        let problem = sum().compute(&Schema::Long, &body, Utc::now()).unwrap_err();
        assert_eq!(problem.path, "$.items");
        assert_eq!(problem.message, "the sum of q * p overflows");
    }

    #[test]
    fn occurred_at_is_millis() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let d = Derived::OccurredAt { field: "at".into() };
        assert_eq!(
            d.compute(&Schema::TimestampMillis, &json!({}), t),
            Ok(Value::TimestampMillis(1_795_341_600_123))
        );
    }
}
