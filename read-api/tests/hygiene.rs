//! Parameter validation, auth and the operational endpoints of the read API, and a
//! property-based test: random query strings never get a 5xx.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::strategy::{Strategy, ValueTree};
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
        (
            "/customers/c-1/orders?placed_from=2026-02-01&placed_to=2026-01-01",
            "placed_to",
        ),
        ("/customers/c-1/orders?cursor=abc", "cursor"),
        ("/customers/c-1/orders?limit=1&limit=2", "limit"),
        ("/search/orders?total_min=-1", "total_min"),
        ("/search/orders?total_min=10&total_max=5", "total_max"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_query_strings_never_get_a_server_error() {
    use Projector::*;
    let all = [
        OrderSummary,
        CustomerStats,
        OrderSearch,
        EventIndex,
        CustomerDirectory,
    ];
    let world = World::start(&all, |_| {}).await;
    let paths = [
        "/orders/o-1",
        "/customers/c-1",
        "/customers/c-1/orders",
        "/search/orders",
        "/events",
        "/projections",
        "/views/customer_directory",
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
        "x",
    ]);
    let value = proptest::string::string_regex("[ -~]{0,40}|[\\PC]{0,10}|-?[0-9]{1,20}").unwrap();
    let query = proptest::collection::vec((names, value), 0..5);
    for path in paths {
        // every read model exists before the storm (until then: 503 "not available yet")
        world.eventually(path, |s, _| s != 503).await;
    }
    let mut runner = TestRunner::deterministic();
    for i in 0..300 {
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
