//! End-to-end acceptance of the read API over the real stack: write side → Kafka → projectors
//! → PostgreSQL / Elasticsearch → read API, in one process per test with its own topics,
//! schema and indices.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use factline_schemas::declarative::DeclarativeConfig;
use factline_schemas::Position;
use serde_json::Value;

fn position_of(answer: &Value) -> Position {
    Position::from_token(answer["position"].as_str().unwrap()).unwrap()
}

/// The next offset the `Factline-Position` header reports for a partition.
fn reported_next(headers: &reqwest::header::HeaderMap, topic: &str, partition: i32) -> i64 {
    header(headers, "factline-position")
        .split(',')
        .filter_map(|entry| {
            let (rest, next) = entry.rsplit_once(':')?;
            let (t, p) = rest.rsplit_once(':')?;
            (t == topic && p.parse::<i32>().ok()? == partition).then(|| next.parse().ok())?
        })
        .next()
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_the_writes_position_reflects_it_on_the_first_try() {
    use Projector::*;
    let world = World::start(
        &[OrderSummary, CustomerStats, OrderSearch, EventIndex],
        |_| {},
    )
    .await;
    let c = unique("c");
    let o = unique("o");
    let registered = world
        .command("RegisterCustomer", customer(&c, "Ada Lovelace"))
        .await;
    let placed = world
        .command("PlaceOrder", order(&o, &c, "Earl Grey tea", 2, 450))
        .await;
    let token = placed["position"].as_str().unwrap().to_owned();

    let (status, headers, body) = world
        .get(&format!("/orders/{o}?consistent_with={token}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "placed");
    assert_eq!(body["total_cents"], 900);
    assert_eq!(body["customer_id"], c.as_str());
    assert!(
        body.get("applied_ids").is_none(),
        "the projector's bookkeeping is served: {body}"
    );
    assert_eq!(header(&headers, "factline-projection"), "order_summary/v1");
    let p = position_of(&placed);
    assert!(reported_next(&headers, &p.topic, p.partition) > p.offset);

    // the same token as a header; then a later command's token
    let shipped = world
        .command(
            "ShipOrder",
            serde_json::json!({"order_id": o, "carrier": "DHL", "tracking_id": "JD1"}),
        )
        .await;
    let response = world
        .http
        .get(format!("{}/orders/{o}", world.read))
        .header(
            "Factline-Consistent-With",
            shipped["position"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "shipped");
    assert_eq!(body["carrier"], "DHL");

    // the customer (customer_stats reads both topics): both writes visible
    let (status, _, body) = world
        .get(&format!("/customers/{c}?consistent_with={token}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["order_count"], 1);
    let (status, _, body) = world
        .get(&format!(
            "/customers/{c}?consistent_with={}",
            registered["position"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "Ada Lovelace");

    // search and the event viewer, through Elasticsearch
    let (status, headers, body) = world
        .get(&format!("/search/orders?q=grey&consistent_with={token}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "factline-projection"), "order_search/v1");
    assert_eq!(body["items"][0]["order_id"], o.as_str());
    assert_eq!(body["items"][0]["customer_name"], "Ada Lovelace");
    let (status, _, body) = world
        .get(&format!(
            "/events?key={o}&consistent_with={}",
            shipped["position"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let types: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["OrderShipped", "OrderPlaced"], "newest first");

    // a position in a topic the projection does not read is a client error
    let (status, _, body) = world
        .get(&format!(
            "/orders/{o}?consistent_with={}",
            registered["position"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["parameter"], "consistent_with");

    // a position not reached in time is said, with the freshness, not served stale
    let far = Position {
        offset: p.offset + 1_000_000,
        ..p.clone()
    }
    .to_token();
    let (status, headers, body) = world
        .get(&format!("/orders/{o}?consistent_with={far}&wait_ms=300"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["freshness"]["projection"], "order_summary");
    assert!(body["freshness"]["lag_events"].is_number(), "{body}");
    assert_eq!(header(&headers, "retry-after"), "1");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_change_appears_within_the_lag_and_freshness_is_reported() {
    let world = World::start(&[Projector::OrderSummary], |_| {}).await;
    let o = unique("o");
    let path = format!("/orders/{o}");
    // every answer carries all the freshness headers, whatever its status: until the projector
    // has created its read model (503 "not available yet"), on the 404 before the order is
    // projected, and on the 200 after
    let fresh = |status: u16, headers: &reqwest::header::HeaderMap| {
        assert_fresh(&format!("{path} ({status})"), headers);
    };
    let (status, headers, _) = world
        .eventually_with(&path, |s, h, _| {
            fresh(s, h);
            s != 503
        })
        .await;
    assert_eq!(status, 404);
    assert!(
        header(&headers, "factline-projection").starts_with("order_summary"),
        "{headers:?}"
    );

    let placed = world
        .command("PlaceOrder", order(&o, "c-x", "Assam", 1, 300))
        .await;
    let p = position_of(&placed);
    let (_, _, body) = world
        .eventually_with(&path, |s, h, _| {
            fresh(s, h);
            s == 200
        })
        .await;
    assert_eq!(body["total_cents"], 300);
    // the headers are read from a status snapshot taken before the query (a floor: the data
    // may be newer, never older), so they reach the write's position within a refresh
    world
        .eventually_with(&path, |s, h, _| {
            fresh(s, h);
            reported_next(h, &p.topic, p.partition) > p.offset
        })
        .await;
    // once caught up, the lag headers say so
    let (_, headers, _) = world
        .eventually_with(&path, |s, h, _| {
            fresh(s, h);
            header(h, "factline-lag-events") == "0"
        })
        .await;
    assert_eq!(header(&headers, "factline-lag-seconds"), "0.000");
    assert_eq!(header(&headers, "factline-projection"), "order_summary/v1");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_its_freshness_headers_even_without_kafka() {
    // a broker address nothing listens on: the read API cannot fetch watermarks, so the lag is
    // honestly unknown, and still said
    let world = World::start(&[Projector::OrderSummary], |config| {
        config.kafka_brokers = "127.0.0.1:1".into();
    })
    .await;
    let o = unique("o");
    let placed = world
        .command("PlaceOrder", order(&o, "c-x", "Assam", 1, 300))
        .await;
    let (status, headers, body) = world
        .get(&format!(
            "/orders/{o}?consistent_with={}",
            placed["position"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_fresh("/orders", &headers);
    assert_eq!(header(&headers, "factline-lag-events"), "unknown");
    assert_eq!(header(&headers, "factline-lag-seconds"), "unknown");
    assert_eq!(header(&headers, "factline-projection"), "order_summary/v1");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_returns_every_order_exactly_once_while_orders_are_added() {
    let world = World::start(&[Projector::OrderSummary], |_| {}).await;
    let c = unique("c");
    let mut initial = HashSet::new();
    let mut last = None;
    for i in 0..24 {
        let o = format!("{c}-o{i:02}");
        last = Some(
            world
                .command("PlaceOrder", order(&o, &c, "Darjeeling", 1, 100 + i))
                .await,
        );
        initial.insert(o);
    }
    // every partition's last write visible: wait on each order's own position
    let (status, _, _) = world
        .get(&format!(
            "/customers/{c}/orders?limit=1&consistent_with={}",
            last.unwrap()["position"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
    let (_, _, page) = world
        .eventually(&format!("/customers/{c}/orders?limit=100"), |_, b| {
            b["items"].as_array().is_some_and(|i| i.len() == 24)
        })
        .await;
    assert!(
        page["items"][0].get("applied_ids").is_none() && page["items"][0]["order_id"].is_string(),
        "an order of the list is not what /orders/{{id}} serves: {page}"
    );

    let adder = {
        let write = world.write.clone();
        let c = c.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..20 {
                let body = order(&format!("{c}-n{i:02}"), &c, "Oolong", 1, 500);
                let r = http
                    .post(format!("{write}/commands/PlaceOrder"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
                // pacing only, so that orders arrive while pages are read; the assertions
                // hold whatever the interleaving
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/customers/{c}/orders?limit=5"),
            Some(cur) => format!("/customers/{c}/orders?limit=5&cursor={cur}"),
        };
        let (status, _, body) = world.get(&path).await;
        assert_eq!(status, 200, "{body}");
        for item in body["items"].as_array().unwrap() {
            seen.push(item["order_id"].as_str().unwrap().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(60)).await; // pacing only, as above
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    adder.await.unwrap();
    let unique_seen: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique_seen.len(),
        seen.len(),
        "an order was returned twice: {seen:?}"
    );
    for o in &initial {
        assert!(unique_seen.contains(o), "{o} was skipped");
    }

    // filters
    let (status, _, body) = world
        .get(&format!("/customers/{c}/orders?status=shipped"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 0);
    let (_, _, body) = world
        .get(&format!(
            "/customers/{c}/orders?placed_from=2000-01-01&placed_to=2000-01-02"
        ))
        .await;
    assert_eq!(body["items"].as_array().unwrap().len(), 0);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_and_the_event_viewer_return_what_was_written_filtered_and_sorted() {
    use Projector::*;
    let world = World::start(&[OrderSearch, EventIndex], |_| {}).await;
    let c1 = unique("c");
    let c2 = unique("c");
    world
        .command("RegisterCustomer", customer(&c1, "Grace Hopper"))
        .await;
    world
        .command("RegisterCustomer", customer(&c2, "Alan Turing"))
        .await;
    let a = unique("o");
    let b = unique("o");
    let d = unique("o");
    world
        .command("PlaceOrder", order(&a, &c1, "Green tea", 1, 1000))
        .await;
    world
        .command("PlaceOrder", order(&b, &c1, "Black coffee", 3, 1000))
        .await;
    let last = world
        .command("PlaceOrder", order(&d, &c2, "Green coffee", 2, 1000))
        .await;
    let cancelled = world
        .command(
            "CancelOrder",
            serde_json::json!({"order_id": b, "reason": "too strong"}),
        )
        .await;
    let wait = |a: &Value| format!("consistent_with={}", a["position"].as_str().unwrap());

    let (status, _, body) = world
        .get(&format!(
            "/search/orders?q=coffee&sort=total_cents&{}",
            wait(&cancelled)
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    world.get(&format!("/search/orders?{}", wait(&last))).await;
    assert_eq!(
        order_ids(&body),
        vec![d.clone(), b.clone()],
        "coffee orders by total ascending"
    );
    let (_, _, body) = world.get("/search/orders?q=hopper&sort=-total_cents").await;
    assert_eq!(
        order_ids(&body),
        vec![b.clone(), a.clone()],
        "by customer name, total descending"
    );
    let (_, _, body) = world
        .get(&format!("/search/orders?status=cancelled&customer_id={c1}"))
        .await;
    assert_eq!(order_ids(&body), vec![b.clone()]);
    let (_, _, body) = world
        .get(&format!(
            "/search/orders?customer_id={c1}&total_min=1500&total_max=5000"
        ))
        .await;
    assert_eq!(order_ids(&body), vec![b.clone()]);
    // pages of one, in order, with the cursor
    let mut paged = Vec::new();
    let mut path = "/search/orders?q=coffee+tea&sort=total_cents&limit=1".to_string();
    loop {
        let (status, _, body) = world.get(&path).await;
        assert_eq!(status, 200, "{body}");
        paged.extend(order_ids(&body));
        match body["next_cursor"].as_str() {
            Some(next) => {
                path = format!("/search/orders?q=coffee+tea&sort=total_cents&limit=1&cursor={next}")
            }
            None => break,
        }
    }
    assert_eq!(paged, vec![a.clone(), d.clone(), b.clone()]);

    // the event viewer
    let (status, _, body) = world
        .get(&format!("/events?type=OrderPlaced&{}", wait(&cancelled)))
        .await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 3);
    let times: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap_or(""))
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(times, sorted, "newest first");
    let (_, _, body) = world
        .get(&format!("/events?topic=customers&key={c2}"))
        .await;
    assert_eq!(body["items"][0]["event_type"], "CustomerRegistered");
    assert_eq!(body["items"][0]["payload"]["name"], "Alan Turing");
    let (_, _, body) = world.get("/events?q=strong").await;
    assert_eq!(body["items"][0]["event_type"], "OrderCancelled");
    assert_eq!(body["items"][0]["key"], b.as_str());
    let (_, _, body) = world.get("/events?from=2000-01-01&to=2000-01-02").await;
    assert_eq!(body["items"].as_array().unwrap().len(), 0);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_report_lag_that_grows_when_stopped_and_returns_to_zero() {
    let mut world = World::start(&[Projector::OrderSummary], |_| {}).await;
    let first = world
        .command("PlaceOrder", order(&unique("o"), "c", "Sencha", 1, 100))
        .await;
    world
        .get(&format!(
            "/orders/x?consistent_with={}",
            first["position"].as_str().unwrap()
        ))
        .await;
    let lag_of = |body: &Value| -> Option<i64> {
        body["projections"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "order_summary")?["versions"][0]["lag_events"]
            .as_i64()
    };
    world
        .eventually("/projections", |_, b| lag_of(b) == Some(0))
        .await;

    world.stop_projector("order_summary").await;
    for _ in 0..5 {
        world
            .command("PlaceOrder", order(&unique("o"), "c", "Sencha", 1, 100))
            .await;
    }
    let (_, _, body) = world
        .eventually("/projections", |_, b| lag_of(b) == Some(5))
        .await;
    let version = &body["projections"][0]["versions"][0];
    assert_eq!(version["state"], "live");
    assert_eq!(version["sink"], "postgres");
    assert_eq!(version["dead_lettered"], 0);
    // lag in seconds grows while stopped
    world
        .eventually("/projections/order_summary", |_, b| {
            b["versions"][0]["lag_seconds"]
                .as_f64()
                .is_some_and(|s| s >= 1.0)
        })
        .await;

    world.start_projector(Projector::OrderSummary);
    world
        .eventually("/projections", |_, b| lag_of(b) == Some(0))
        .await;
    let (status, _, _) = world.get("/projections/nope").await;
    assert_eq!(status, 404);
    world.stop().await;
}

/// Version 1 of the `customer_directory` view serves customer `c` as `name`, read consistent
/// with the command answer `registered`.
async fn assert_directory_entry(world: &World, c: &str, name: &str, registered: &Value) {
    let (status, headers, body) = world
        .get(&format!(
            "/views/customer_directory/{c}?consistent_with={}",
            registered["position"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], name);
    assert_eq!(
        header(&headers, "factline-projection"),
        "customer_directory/v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_projections_get_read_endpoints_without_code() {
    let world = World::start(&[Projector::CustomerDirectory], |_| {}).await;
    // served once the projector registered it (its table exists from then on)
    world
        .eventually("/views/customer_directory", |s, _| s == 200)
        .await;
    let c = unique("c");
    let registered = world
        .command("RegisterCustomer", customer(&c, "Katherine Johnson"))
        .await;
    assert_directory_entry(&world, &c, "Katherine Johnson", &registered).await;
    let (status, _, body) = world
        .get(&format!("/views/customer_directory?email={c}@example.com"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"][0]["customer_id"], c.as_str());
    let (status, _, body) = world.get("/views/customer_directory?shoe_size=42").await;
    assert_eq!(status, 400);
    assert_eq!(body["parameter"], "shoe_size");
    let (status, _, _) = world.get("/views/customer_directory/nobody").await;
    assert_eq!(status, 404);
    let (status, _, _) = world.get("/views/no_such_view/x").await;
    assert_eq!(status, 404);
    world.stop().await;
}

/// The read API reads no projector file: it starts knowing no view, and a declarative view
/// appears (in the routes and in the OpenAPI document) once its projector has registered its
/// configuration in PostgreSQL, exactly as the projector parsed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declarative_view_is_served_once_its_projector_registered_it() {
    let mut world = World::start(&[], |_| {}).await;
    let (status, _, body) = world.get("/views/customer_directory/nobody").await;
    assert_eq!(status, 404, "{body}");
    let (status, _, openapi) = world.get("/openapi.json").await;
    assert_eq!(status, 200);
    let name_of =
        |openapi: &Value| openapi["paths"]["/views/{name}"]["get"]["parameters"][0].clone();
    assert!(
        name_of(&openapi)["schema"].get("examples").is_none(),
        "{openapi}"
    );

    world.start_projector(Projector::CustomerDirectory);
    let c = unique("c");
    let registered = world
        .command("RegisterCustomer", customer(&c, "Dorothy Vaughan"))
        .await;
    world
        .eventually("/views/customer_directory", |s, _| s != 404)
        .await;
    assert_directory_entry(&world, &c, "Dorothy Vaughan", &registered).await;
    let (_, _, openapi) = world.get("/openapi.json").await;
    assert_eq!(
        name_of(&openapi)["schema"]["examples"],
        serde_json::json!(["customer_directory"])
    );
    assert!(name_of(&openapi)["description"]
        .as_str()
        .unwrap()
        .contains("key customer_id"));

    // what PostgreSQL holds is the file, unchanged
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../projectors/config/customer_directory.toml"
    );
    let file = DeclarativeConfig::load(path).unwrap();
    let (client, connection) = tokio_postgres::connect(&world.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let recorded =
        factline_projectors::bookkeeping::declarative_config(&client, "customer_directory", 1)
            .await
            .unwrap()
            .expect("the projector recorded its configuration");
    assert_eq!(recorded, file.to_json());
    assert_eq!(DeclarativeConfig::from_json(recorded).unwrap(), file);
    world.stop().await;
}

/// Every shape a declarative configuration can take (each value source, guard, filter value
/// type, both sinks) comes back from a PostgreSQL `jsonb` column as it went in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declarative_configuration_round_trips_through_postgresql_unchanged() {
    let configs = [
        include_str!("../../schemas/testdata/declarative-everything.toml"),
        include_str!("../../projectors/config/customer_search.toml"),
        include_str!("../../projectors/config/customer_directory.toml"),
    ];
    let (client, connection) = tokio_postgres::connect(&env("DATABASE_URL"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for text in configs {
        let config = DeclarativeConfig::parse(text).unwrap();
        let json = config.to_json();
        let back: Value = client
            .query_one("SELECT $1::jsonb", &[&json])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            DeclarativeConfig::from_json(back).unwrap(),
            config,
            "{text}"
        );
    }
}

/// A declarative view follows its projector's rebuild: while version 2 builds beside the live
/// version 1 the view is version 1's; once version 2 has caught up and swapped, the view is
/// served with version 2's configuration (here: one more column to filter on), with no restart
/// of the read API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declarative_view_follows_its_projectors_rebuild_swap() {
    let world = World::start(&[Projector::CustomerDirectory], |_| {}).await;
    let c = unique("c");
    let registered = world
        .command("RegisterCustomer", customer(&c, "Mary Jackson"))
        .await;
    world
        .eventually("/views/customer_directory", |s, _| s == 200)
        .await;
    let token = registered["position"].as_str().unwrap().to_owned();
    let (status, _, body) = world
        .get(&format!(
            "/views/customer_directory?name_again=x&consistent_with={token}"
        ))
        .await;
    assert_eq!(status, 400, "version 1 has no such column: {body}");
    assert_eq!(body["parameter"], "name_again");

    // version 2: the same model plus a column, built beside version 1, then swapped in
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../projectors/config/customer_directory.toml"
    );
    let mut v2 = DeclarativeConfig::load(path).unwrap();
    v2.version = 2;
    v2.tables[0].columns.insert(
        "name_again".into(),
        factline_schemas::declarative::ColumnType::Text,
    );
    let registers = v2
        .on
        .iter_mut()
        .find(|m| m.event_type == "CustomerRegistered")
        .unwrap();
    registers.set.insert(
        "name_again".into(),
        factline_schemas::declarative::Source::Path("name".into()),
    );
    v2.validate().unwrap();
    let config = world.projector_config();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let rebuild = tokio::spawn(factline_projectors::run(
        config,
        factline_projectors::declarative::DeclarativeProjection::new(v2),
        async move {
            let _ = stopped.await;
        },
    ));

    let (_, headers, body) = world
        .eventually_with(
            &format!("/views/customer_directory?name_again=Mary%20Jackson&consistent_with={token}"),
            |status, headers, _| {
                status == 200 && header(headers, "factline-projection") == "customer_directory/v2"
            },
        )
        .await;
    assert_fresh("/views/customer_directory", &headers);
    assert_eq!(body["items"][0]["customer_id"], c.as_str(), "{body}");
    assert_eq!(body["items"][0]["name_again"], "Mary Jackson", "{body}");

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), rebuild).await;
    world.stop().await;
}
