//! Pure tests of the built-in catalog: every sample command builds its event, every problem of a
//! body is reported at once with its path, and JSON -> Avro -> JSON round-trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use apache_avro::types::Value;
use chrono::{DateTime, Utc};
use factline_schemas::{avro_to_json, Catalog, Problems};
use serde_json::{json, Value as Json};

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn place_order() -> Json {
    json!({"order_id": "o-1", "customer_id": "c-1", "currency": "EUR",
           "items": [{"sku": "tea-01", "name": "Earl Grey tea", "quantity": 2, "unit_price_cents": 450},
                     {"sku": "mug-02", "name": "Mug", "quantity": 1, "unit_price_cents": 1200}],
           "shipping_address": {"line1": "12 Baker St", "city": "London", "postal_code": "NW1", "country": "GB"}})
}

/// Every sample command of the contract with a valid body.
fn samples() -> Vec<(&'static str, Json)> {
    vec![
        (
            "RegisterCustomer",
            json!({"customer_id": "c-1", "email": "ada@example.com", "name": "Ada Lovelace"}),
        ),
        (
            "ChangeCustomerEmail",
            json!({"customer_id": "c-1", "email": "ada@lovelace.org"}),
        ),
        ("ForgetCustomer", json!({"customer_id": "c-1"})),
        ("PlaceOrder", place_order()),
        (
            "ShipOrder",
            json!({"order_id": "o-1", "carrier": "DHL", "tracking_id": "JD0001"}),
        ),
        ("DeliverOrder", json!({"order_id": "o-1"})),
        (
            "CancelOrder",
            json!({"order_id": "o-1", "reason": "changed my mind"}),
        ),
    ]
}

fn problems(command: &str, body: Json) -> Problems {
    Catalog::builtin()
        .command(command)
        .unwrap()
        .build_event(body.clone(), at())
        .unwrap_err()
}

#[test]
fn every_sample_command_round_trips_json_to_avro_to_json() {
    let catalog = Catalog::builtin();
    for (name, body) in samples() {
        let command = catalog.command(name).unwrap();
        let event = command
            .build_event(body.clone(), at())
            .unwrap_or_else(|p| panic!("{name}: {p}"));
        assert_eq!(event.event_type, command.event_type);
        assert_eq!(event.topic, command.topic);
        assert_eq!(event.key, body[&command.key_field].as_str().unwrap());
        assert!(event.value.validate(&command.event().schema), "{name}");
        let json = avro_to_json(&event.value);
        // What the client sent comes back unchanged; the derived fields are added.
        let object = json.as_object().unwrap();
        for (key, value) in body.as_object().unwrap() {
            if key == "shipping_address" {
                let mut expected = value.clone();
                expected["line2"] = Json::Null;
                assert_eq!(object[key], expected, "{name}.{key}");
            } else {
                assert_eq!(&object[key], value, "{name}.{key}");
            }
        }
        for derived in command.derived() {
            assert!(
                object.contains_key(derived.field()),
                "{name}: {}",
                derived.field()
            );
        }
        // And the JSON of the event converts back to the same Avro value.
        let again = factline_schemas::json_to_avro(&command.event().schema, json).unwrap();
        assert_eq!(again, event.value, "{name}");
    }
}

#[test]
fn place_order_derives_total_and_timestamp() {
    let command = Catalog::builtin().command("PlaceOrder").unwrap();
    let event = command.build_event(place_order(), at()).unwrap();
    let json = avro_to_json(&event.value);
    assert_eq!(json["total_cents"], json!(2 * 450 + 1200));
    assert_eq!(json["placed_at"], json!("2026-11-22T10:00:00.123Z"));
    assert_eq!(json["currency"], json!("EUR"));
    let Value::Record(fields) = &event.value else {
        panic!()
    };
    assert!(fields.contains(&(
        "placed_at".to_string(),
        Value::TimestampMillis(1_795_341_600_123)
    )));
}

#[test]
fn every_timestamp_is_occurred_at() {
    for (name, body) in samples() {
        let event = Catalog::builtin()
            .command(name)
            .unwrap()
            .build_event(body.clone(), at())
            .unwrap();
        let Value::Record(fields) = &event.value else {
            panic!()
        };
        for (field, value) in fields {
            if field.ends_with("_at") {
                assert_eq!(
                    value,
                    &Value::TimestampMillis(1_795_341_600_123),
                    "{name}.{field}"
                );
            }
        }
    }
}

#[test]
fn a_body_with_three_problems_gets_all_three_with_their_paths() {
    let mut body = place_order();
    body["items"][0]["quantity"] = json!(0); // rule: quantity >= 1
    body["currency"] = json!("XYZ"); // schema: unknown enum symbol
    body["shipping_address"]
        .as_object_mut()
        .unwrap()
        .remove("city"); // schema: missing
    let problems = problems("PlaceOrder", body);
    assert_eq!(problems.len(), 3, "{problems}");
    let quantity = problems.at("$.items[0].quantity").unwrap();
    assert_eq!(quantity.message, "too small");
    assert_eq!(quantity.expected.as_deref(), Some("at least 1"));
    assert_eq!(quantity.found.as_deref(), Some("number 0"));
    let currency = problems.at("$.currency").unwrap();
    assert_eq!(currency.message, "unknown symbol");
    assert_eq!(currency.found.as_deref(), Some("string \"XYZ\""));
    assert_eq!(
        problems.at("$.shipping_address.city").unwrap().message,
        "required field is missing"
    );
}

#[test]
fn problems_serialize_as_json_with_path_message_expected_found() {
    let mut body = place_order();
    body["items"][1]["quantity"] = json!("two");
    let problems = problems("PlaceOrder", body);
    assert_eq!(
        serde_json::to_value(&problems).unwrap(),
        json!([{"path": "$.items[1].quantity", "message": "wrong type",
                "expected": "int (32-bit integer)", "found": "string \"two\""}])
    );
}

#[test]
fn derived_fields_sent_by_a_client_are_reported() {
    let mut body = place_order();
    body["total_cents"] = json!(1);
    body["placed_at"] = json!("2026-01-01T00:00:00Z");
    let problems = problems("PlaceOrder", body);
    assert_eq!(problems.len(), 2, "{problems}");
    for path in ["$.total_cents", "$.placed_at"] {
        assert_eq!(
            problems.at(path).unwrap().message,
            "derived by the write side; do not send it"
        );
    }
}

#[test]
fn unknown_fields_are_rejected() {
    let mut body = place_order();
    body["coupon"] = json!("FREE");
    body["items"][0]["colour"] = json!("red");
    let problems = problems("PlaceOrder", body);
    assert_eq!(problems.len(), 2, "{problems}");
    assert_eq!(problems.at("$.coupon").unwrap().message, "unknown field");
    assert_eq!(
        problems.at("$.items[0].colour").unwrap().message,
        "unknown field"
    );
}

#[test]
fn each_declared_rule_of_place_order() {
    let cases: Vec<(&str, Json, &str, &str)> = vec![
        ("items", json!([]), "$.items", "too few items"),
        ("order_id", json!("  "), "$.order_id", "must not be empty"),
        ("order_id", json!("x".repeat(65)), "$.order_id", "too long"),
        (
            "currency",
            json!("UNKNOWN"),
            "$.currency",
            "value not allowed",
        ),
    ];
    for (field, value, path, message) in cases {
        let mut body = place_order();
        body[field] = value;
        let problems = problems("PlaceOrder", body);
        assert_eq!(problems.len(), 1, "{field}: {problems}");
        assert_eq!(problems.at(path).unwrap().message, message, "{field}");
    }
    let mut body = place_order();
    body["items"][0]["unit_price_cents"] = json!(-1);
    body["items"][1]["sku"] = json!("");
    body["items"][1]["quantity"] = json!(10_001);
    body["shipping_address"]["country"] = json!("GBR");
    body["shipping_address"]["line2"] = json!("y".repeat(201));
    let problems = problems("PlaceOrder", body);
    assert_eq!(problems.len(), 5, "{problems}");
    assert_eq!(
        problems.at("$.items[0].unit_price_cents").unwrap().message,
        "too small"
    );
    assert_eq!(
        problems.at("$.items[1].sku").unwrap().message,
        "must not be empty"
    );
    assert_eq!(
        problems.at("$.items[1].quantity").unwrap().message,
        "too large"
    );
    assert_eq!(
        problems.at("$.shipping_address.country").unwrap().message,
        "too long"
    );
    assert_eq!(
        problems.at("$.shipping_address.line2").unwrap().message,
        "too long"
    );
}

#[test]
fn customer_rules() {
    let problems = problems(
        "RegisterCustomer",
        json!({"customer_id": "", "email": "not an email", "name": "x".repeat(201)}),
    );
    assert_eq!(problems.len(), 3, "{problems}");
    assert_eq!(
        problems.at("$.customer_id").unwrap().message,
        "must not be empty"
    );
    assert_eq!(
        problems.at("$.email").unwrap().message,
        "not a valid email address"
    );
    assert_eq!(problems.at("$.name").unwrap().message, "too long");
    let p = problems_of_change_email("a@b");
    assert_eq!(
        p.at("$.email").unwrap().message,
        "not a valid email address"
    );
}

fn problems_of_change_email(email: &str) -> Problems {
    problems(
        "ChangeCustomerEmail",
        json!({"customer_id": "c-1", "email": email}),
    )
}

#[test]
fn quantity_beyond_int_range_is_a_schema_problem() {
    let mut body = place_order();
    body["items"][0]["quantity"] = json!(3_000_000_000_i64);
    let problems = problems("PlaceOrder", body);
    // The range problem from the schema, not the rule's maximum on top of it.
    assert_eq!(problems.len(), 1, "{problems}");
    let p = problems.at("$.items[0].quantity").unwrap();
    assert_eq!(p.message, "number out of range");
}

#[test]
fn total_overflow_is_a_problem() {
    let mut body = place_order();
    body["items"][0]["quantity"] = json!(10_000);
    body["items"][0]["unit_price_cents"] = json!(i64::MAX / 2);
    let problems = problems("PlaceOrder", body);
    assert!(problems.at("$.items").is_some(), "{problems}");
}

#[test]
fn optional_line2_accepts_null_and_a_string() {
    let command = Catalog::builtin().command("PlaceOrder").unwrap();
    for line2 in [Json::Null, json!("Flat 2")] {
        let mut body = place_order();
        body["shipping_address"]["line2"] = line2.clone();
        let event = command.build_event(body.clone(), at()).unwrap();
        assert_eq!(
            avro_to_json(&event.value)["shipping_address"]["line2"],
            line2
        );
    }
}

#[test]
fn a_body_that_is_not_an_object_is_one_problem() {
    let problems = problems("ShipOrder", json!("hello"));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems.0[0].path, "$");
}

fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Json> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        "[a-z@. ]{0,8}".prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("order_id".to_string()),
                    Just("items".to_string()),
                    Just("quantity".to_string()),
                    Just("currency".to_string()),
                    "[a-z_]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #[test]
    fn any_body_gives_an_event_or_problems_with_json_paths(body in arbitrary_json()) {
        for command in Catalog::builtin().commands() {
            match command.build_event(body.clone(), at()) {
                Ok(event) => proptest::prop_assert!(event.value.validate(&command.event().schema)),
                Err(problems) => {
                    proptest::prop_assert!(!problems.is_empty());
                    for problem in &problems {
                        proptest::prop_assert!(problem.path.starts_with('$'));
                    }
                }
            }
        }
    }
}
