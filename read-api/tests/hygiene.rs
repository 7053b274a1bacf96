//! Parameter validation, auth and the operational endpoints of the read API, and a
//! property-based test: random query strings never get a 5xx.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use proptest::prelude::prop_oneof;
use proptest::strategy::{Just, Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_400_naming_the_parameter() {
    let world = World::start(&[], |_| {}).await;
    let cases = [
        ("/orders/o-1?consistent_with=garbage", "consistent_with"),
        ("/orders/o-1?colour=red", "colour"),
        ("/customers/c-1/orders?limit=0", "limit"),
        ("/customers/c-1/orders?limit=101", "limit"),
        ("/customers/c-1/orders?limit=ten", "limit"),
        ("/customers/c-1/orders?status=lost", "status"),
        ("/customers/c-1/orders?placed_from=yesterday", "placed_from"),
        ("/customers/c-1/orders?cursor=abc", "cursor"),
        ("/customers/c-1/orders?limit=1&limit=2", "limit"),
        ("/search/orders?total_min=-1", "total_min"),
        ("/search/orders?sort=name", "sort"),
        ("/events?from=soon", "from"),
        ("/events?cursor=eyJ4IjoxfQ", "cursor"),
        ("/orders/o-1?wait_ms=99999999", "wait_ms"),
    ];
    for (path, parameter) in cases {
        let (status, _, body) = world.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["parameter"], parameter, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with(parameter),
            "{body}"
        );
    }
    let long = "x".repeat(600);
    let (status, _, body) = world.get(&format!("/search/orders?q={long}")).await;
    assert_eq!((status, body["parameter"].as_str()), (400, Some("q")));
    let (status, _, _) = world.get("/no/such/route").await;
    assert_eq!(status, 404);
    world.stop().await;
}

/// A cursor as the API encodes one (base64url JSON), around any JSON value.
fn cursor_of(value: serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cursors_dates_and_view_filters_get_400_while_the_read_models_exist() {
    use Projector::*;
    let world = World::start(
        &[
            OrderSummary,
            OrderSearch,
            EventIndex,
            CustomerDirectory,
            CustomerSearch,
        ],
        |_| {},
    )
    .await;
    for path in [
        "/customers/c-1/orders",
        "/search/orders",
        "/events",
        "/views/customer_directory",
        "/views/customer_search",
    ] {
        // every read model exists (until then: 503 "not available yet")
        world.eventually(path, |s, _| s == 200).await;
    }
    let abc = cursor_of(serde_json::json!(["a", "b", "c"]));
    let xy = cursor_of(serde_json::json!(["x", "y"]));
    let floats = cursor_of(serde_json::json!([1.5, 2.5, "e"]));
    let short = cursor_of(serde_json::json!([1]));
    let nested = cursor_of(serde_json::json!([[1], "o-1"]));
    let numeric_key = cursor_of(serde_json::json!([17]));
    let cases = [
        (format!("/events?cursor={abc}"), "cursor"),
        (format!("/events?cursor={floats}"), "cursor"),
        (format!("/events?cursor={short}"), "cursor"),
        (format!("/search/orders?cursor={xy}"), "cursor"),
        (
            format!("/search/orders?sort=total_cents&cursor={xy}"),
            "cursor",
        ),
        (format!("/search/orders?cursor={nested}"), "cursor"),
        (format!("/customers/c-1/orders?cursor={xy}"), "cursor"),
        (
            format!("/views/customer_directory?cursor={numeric_key}"),
            "cursor",
        ),
        (format!("/views/customer_search?cursor={xy}"), "cursor"),
        (
            "/search/orders?placed_from=%2B10000-01-01".into(),
            "placed_from",
        ),
        ("/search/orders?placed_to=-0001-01-01".into(), "placed_to"),
        ("/events?to=10000-01-01T00:00:00Z".into(), "to"),
        ("/events?from=2026-1-5".into(), "from"),
        (
            "/customers/c-1/orders?placed_from=%2B10000-01-01".into(),
            "placed_from",
        ),
        (
            "/views/customer_directory?forgotten=word".into(),
            "forgotten",
        ),
        (
            "/views/customer_directory?registered_at=soon".into(),
            "registered_at",
        ),
        ("/views/customer_search?forgotten=word".into(), "forgotten"),
        (
            "/views/customer_search?email_at=%2B10000-01-01".into(),
            "email_at",
        ),
    ];
    for (path, parameter) in cases {
        let (status, _, body) = world.get(&path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["parameter"], parameter, "{path}: {body}");
    }
    // well-typed filters still answer
    for path in [
        "/views/customer_directory?forgotten=false&registered_at=2026-11-23T10:00:00Z",
        "/views/customer_search?forgotten=true&email_at=2026-11-23",
        "/search/orders?placed_from=0001-01-01&placed_to=9999-12-31",
        "/events?to=9999-12-31T23:00:00-05:00",
        // a range ending before it starts, or an empty total range, matches nothing
        "/search/orders?placed_from=2026-02-01&placed_to=2026-01-01&total_min=10&total_max=5",
        "/customers/c-1/orders?placed_from=2026-02-01&placed_to=2026-01-01",
    ] {
        let (status, _, body) = world.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_elasticsearch_rejects_is_a_400_not_a_500() {
    use axum::response::IntoResponse;
    let es = env("ELASTICSEARCH_URL");
    let index = unique("t-reject");
    let http = reqwest::Client::new();
    let created = http
        .put(format!("{es}/{index}"))
        .json(&serde_json::json!({"mappings": {"properties": {"at": {"type": "date"}}}}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let search = factline_read_api::es::Search::new(&es);
    let error = search
        .search(
            &index,
            &serde_json::json!({"query": {"term": {"at": "not a date"}}}),
        )
        .await
        .unwrap_err();
    let _ = http.delete(format!("{es}/{index}")).send().await;
    let response = error.into_response();
    assert_eq!(response.status().as_u16(), 400);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("rejected"), "{body}");
    assert!(!message.contains(&index), "no index names leak: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_query_strings_never_get_a_server_error() {
    let world = World::start(&Projector::ALL, |_| {}).await;
    let paths = [
        "/orders/o-1",
        "/customers/c-1",
        "/customers/c-1/orders",
        "/search/orders",
        "/events",
        "/projections",
        "/views/customer_directory",
        "/views/customer_search",
    ];
    let names = proptest::sample::select(vec![
        "q",
        "status",
        "limit",
        "cursor",
        "sort",
        "from",
        "to",
        "placed_from",
        "placed_to",
        "total_min",
        "total_max",
        "customer_id",
        "type",
        "key",
        "topic",
        "wait_ms",
        "consistent_with",
        "email",
        "forgotten",
        "registered_at",
        "email_at",
        "customer_id",
        "x",
    ]);
    let text = proptest::string::string_regex("[ -~]{0,40}|[\\PC]{0,10}|-?[0-9]{1,20}").unwrap();
    // dates: any year width and sign, optional time and offset
    let date = proptest::string::string_regex(
        "[+-]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))?",
    )
    .unwrap();
    // cursors: base64url JSON arrays of any scalars (and a few nested values)
    let scalar = prop_oneof![
        Just(serde_json::Value::Null),
        proptest::bool::ANY.prop_map(serde_json::Value::from),
        proptest::num::i64::ANY.prop_map(serde_json::Value::from),
        proptest::num::f64::NORMAL.prop_map(serde_json::Value::from),
        proptest::string::string_regex("[ -~]{0,12}")
            .unwrap()
            .prop_map(serde_json::Value::from),
        proptest::string::string_regex("[+-]?[0-9]{4,6}-[0-9]{2}-[0-9]{2}T00:00:00Z")
            .unwrap()
            .prop_map(serde_json::Value::from),
        Just(serde_json::json!([1, "a"])),
        Just(serde_json::json!({"a": 1})),
    ];
    let cursor = proptest::collection::vec(scalar, 0..5)
        .prop_map(|items| cursor_of(serde_json::Value::Array(items)));
    let value = prop_oneof![3 => text, 1 => date, 1 => cursor];
    let query = proptest::collection::vec((names, value), 0..5);
    for path in paths {
        // every read model exists before the storm (until then: 503 "not available yet")
        world.eventually(path, |s, _| s != 503).await;
    }
    let mut runner = TestRunner::deterministic();
    for i in 0..400 {
        let pairs = query.new_tree(&mut runner).unwrap().current();
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let path = format!("{}?{encoded}", paths[i % paths.len()]);
        let (status, _, body) = world.get(&path).await;
        assert!(status < 500, "{path}: {status} {body}");
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_keys_guard_queries_but_not_health() {
    let hash = hex::encode(Sha256::digest(b"reader-key"));
    let world = World::start(&[], move |config| {
        config.api_key_hashes = factline_read_api::config::parse_key_hashes(&hash).unwrap();
    })
    .await;
    let (status, headers, _) = world.get("/projections").await;
    assert_eq!(status, 401);
    assert_eq!(header(&headers, "www-authenticate"), "Bearer");
    let wrong = world
        .http
        .get(format!("{}/projections", world.read))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = world
        .http
        .get(format!("{}/projections", world.read))
        .bearer_auth("reader-key")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
    let (status, _, _) = world.get("/healthz").await;
    assert_eq!(status, 200);
    world.stop().await;
}
