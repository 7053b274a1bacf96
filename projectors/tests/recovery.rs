//! Recovery, against the real local stack: projector binaries started exactly as
//! `scripts/services.sh` starts them come back after SIGKILL and share partitions when two run
//! with the same defaults; an idle one pauses its fetches and misses nothing written meanwhile,
//! also when its partitions move in a rebalance; registry answers that may heal (404, 401)
//! delay records but never
//! dead-letter them, and after the retry bound a record is dead-lettered without poisoning the
//! ones that follow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::dataset::{self, placed};
use common::{connect, count, dump, fresh_schema, start, wait_caught_up, Fixture, TestEvent};
use factline_projectors::projections::{order_summary, OrderSummaryProjection};
use serde_json::Value;

const ORDERS: &str = "SELECT * FROM order_summary ORDER BY order_id";

/// Kills the child process if the test fails before it is stopped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The environment `scripts/services.sh` gives a projector: `scripts/stack.sh env`, plus its
/// `PROJECTOR_ADDR`. A test changes only what isolates it (its PostgreSQL schema, its topic
/// prefix), never a tuning knob.
fn services_env() -> Vec<(String, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/stack.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg("env")
        .output()
        .unwrap();
    assert!(output.status.success(), "scripts/stack.sh env failed");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.trim_matches(|c| c == '"' || c == '\'').to_owned(),
            )
        })
        .collect()
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Starts `factline-projector order_summary` the way `scripts/services.sh start` does.
fn spawn_like_services(fixture: &Fixture, database_url: &str, addr: &str) -> KillOnDrop {
    let mut command = Command::new(env!("CARGO_BIN_EXE_factline-projector"));
    command.arg("order_summary");
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    for (k, v) in services_env() {
        command.env(k, v);
    }
    command
        .env("DATABASE_URL", database_url)
        .env("PROJECTOR_TOPIC_PREFIX", &fixture.prefix)
        .env("PROJECTOR_ADDR", addr)
        .env(
            "RUST_LOG",
            std::env::var("RECOVERY_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .unwrap()
}

async fn health(addr: &str) -> Option<Value> {
    let response = reqwest::get(format!("http://{addr}/healthz")).await.ok()?;
    response.json().await.ok()
}

/// Polls `/healthz` until `ready` holds, or fails after a generous deadline.
async fn wait_health(addr: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let last = health(addr).await;
        if let Some(h) = &last {
            if ready(h) {
                return h.clone();
            }
        }
        assert!(Instant::now() < deadline, "{what}: last health {last:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn partitions(health: &Value) -> BTreeSet<String> {
    health["partitions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn sigterm(child: &mut KillOnDrop) {
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.0.wait().unwrap().success(), "graceful stop failed");
}

async fn sum_positions(url: &str) -> i64 {
    let client = connect(url).await;
    client
        .query_one(
            "SELECT COALESCE(sum(next_offset), 0)::bigint FROM factline_projector_positions \
             WHERE projector = 'order_summary'",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// The reference: the same events projected once in this process, to completion.
async fn reference(fixture: &Fixture) -> String {
    let (_, url) = fresh_schema().await;
    let running = start(fixture.config(&url), OrderSummaryProjection);
    wait_caught_up(
        &url,
        order_summary::NAME,
        order_summary::VERSION,
        &fixture.ends_for(&OrderSummaryProjection),
    )
    .await;
    running.stop().await;
    url
}

/// The projector's `/metrics` text.
async fn metrics(addr: &str) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until `/metrics` reports a lag of 0 for each of `expected` partitions.
async fn wait_lag_zero(addr: &str, expected: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = metrics(addr).await;
        let lags: HashMap<String, f64> = metrics
            .lines()
            .filter(|l| l.starts_with("factline_projector_lag_events{"))
            .filter_map(|l| {
                let topic = l.split("topic=\"").nth(1)?.split('"').next()?;
                let partition = l.split("partition=\"").nth(1)?.split('"').next()?;
                let value: f64 = l.rsplit(' ').next()?.parse().ok()?;
                Some((format!("{topic}/{partition}"), value))
            })
            .collect();
        if expected.iter().all(|p| lags.get(p) == Some(&0.0)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lag did not return to 0 for {expected:?}: {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_with_sigkill_and_started_again_gets_its_partitions_back() {
    let mut fixture = Fixture::new(3).await;
    let events = dataset::shop(40, 400);
    let (before, during) = events.split_at(events.len() / 2);
    fixture.produce_all(before).await;
    let (_, url) = fresh_schema().await;
    let addr = free_addr();
    let mut child = spawn_like_services(&fixture, &url, &addr);
    let all: BTreeSet<String> = (0..3)
        .map(|p| format!("{}/{p}", fixture.topic("orders")))
        .collect();
    let first = wait_health(&addr, "the projector got no partition", |h| {
        partitions(h) == all
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if sum_positions(&url).await > 0 {
            break;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "projector exited");
        assert!(Instant::now() < deadline, "the projector committed nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.0.kill().unwrap(); // SIGKILL, mid-stream
    child.0.wait().unwrap();
    fixture.produce_all(during).await; // the stream goes on while it is down

    let mut child = spawn_like_services(&fixture, &url, &addr);
    let again = wait_health(
        &addr,
        "the restarted projector got no partition back",
        |h| partitions(h) == all,
    )
    .await;
    assert_eq!(
        again["instance_id"], first["instance_id"],
        "a restart takes the same static member slot"
    );
    let ends = fixture.ends_for(&OrderSummaryProjection);
    wait_caught_up(&url, order_summary::NAME, order_summary::VERSION, &ends).await;
    wait_lag_zero(&addr, &all).await;
    sigterm(&mut child);

    let reference = reference(&fixture).await;
    assert_eq!(dump(&url, ORDERS).await, dump(&reference, ORDERS).await);
    // every event id remembered exactly once, in the rows
    let applied_ids =
        "SELECT coalesce(sum(length(applied_ids) / 16), 0)::bigint FROM order_summary";
    assert_eq!(
        count(&url, applied_ids).await,
        count(&reference, applied_ids).await,
    );
}

/// Waits until both instances hold partitions of `orders`, disjoint and together all of them;
/// returns their health answers.
async fn wait_shared(fixture: &Fixture, addr_a: &str, addr_b: &str) -> (Value, Value) {
    let all: BTreeSet<String> = (0..4)
        .map(|p| format!("{}/{p}", fixture.topic("orders")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ha, hb) = (health(addr_a).await, health(addr_b).await);
        if let (Some(ha), Some(hb)) = (&ha, &hb) {
            let (pa, pb) = (partitions(ha), partitions(hb));
            if !pa.is_empty()
                && !pb.is_empty()
                && pa.is_disjoint(&pb)
                && pa.union(&pb).cloned().collect::<BTreeSet<_>>() == all
            {
                return (ha.clone(), hb.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "both instances never had partitions: {ha:?} {hb:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the idle projector at `addr` paused twice more (a whole pause-probe cycle ran).
async fn wait_idle_cycle(addr: &str, child: &mut KillOnDrop) {
    let seen = idle_pauses(addr).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while idle_pauses(addr).await < seen + 2.0 {
        assert!(child.0.try_wait().unwrap().is_none(), "projector exited");
        assert!(
            Instant::now() < deadline,
            "an idle projector never paused its partitions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_started_with_the_same_defaults_both_get_partitions() {
    let mut fixture = Fixture::new(4).await;
    fixture.produce_all(&dataset::shop(12, 60)).await;
    let (_, url) = fresh_schema().await;
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let mut a = spawn_like_services(&fixture, &url, &addr_a);
    let mut b = spawn_like_services(&fixture, &url, &addr_b);
    let (ha, hb) = wait_shared(&fixture, &addr_a, &addr_b).await;
    let (ia, ib) = (ha["instance_id"].as_str(), hb["instance_id"].as_str());
    assert!(
        ia.is_some() && ib.is_some(),
        "static membership by default: {ha} {hb}"
    );
    assert_ne!(ia, ib, "two instances must not share a group.instance.id");
    fixture
        .produce(&placed("o-late", "c-1", 1, 100, 9000))
        .await;
    let ends = fixture.ends_for(&OrderSummaryProjection);
    wait_caught_up(&url, order_summary::NAME, order_summary::VERSION, &ends).await;
    sigterm(&mut a);
    sigterm(&mut b);
    let reference = reference(&fixture).await;
    assert_eq!(dump(&url, ORDERS).await, dump(&reference, ORDERS).await);
}

/// A counter of the projector at `addr`, summed over its labels.
async fn counted(addr: &str, counter: &str) -> f64 {
    let prefix = format!("{counter}{{");
    metrics(addr)
        .await
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The idle pauses the projector has counted.
async fn idle_pauses(addr: &str) -> f64 {
    counted(addr, "factline_projector_idle_pauses_total").await
}

/// Produces the first half of a small shop, starts `order_summary` as the services do and
/// waits until it applied it; returns the second half, the database and the projector's
/// address and process.
async fn started_on_half(fixture: &mut Fixture) -> (Vec<TestEvent>, String, String, KillOnDrop) {
    let events = dataset::shop(6, 60);
    let (first, rest) = events.split_at(events.len() / 2);
    fixture.produce_all(first).await;
    let (_, url) = fresh_schema().await;
    let addr = free_addr();
    let child = spawn_like_services(fixture, &url, &addr);
    wait_caught_up(
        &url,
        order_summary::NAME,
        order_summary::VERSION,
        &fixture.ends_for(&OrderSummaryProjection),
    )
    .await;
    (rest.to_vec(), url, addr, child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_projector_pauses_its_fetches_and_applies_what_is_written_meanwhile() {
    let mut fixture = Fixture::new(3).await;
    let (rest, url, addr, mut child) = started_on_half(&mut fixture).await;
    // each round: the idle projector pauses (twice, so a whole pause-probe cycle ran), then
    // records arrive while it is paused or probing, and all of them are applied
    for chunk in rest.chunks(rest.len().div_ceil(3)) {
        wait_idle_cycle(&addr, &mut child).await;
        fixture.produce_all(chunk).await;
        let ends = fixture.ends_for(&OrderSummaryProjection);
        wait_caught_up(&url, order_summary::NAME, order_summary::VERSION, &ends).await;
    }
    sigterm(&mut child);
    let reference = reference(&fixture).await;
    assert_eq!(dump(&url, ORDERS).await, dump(&reference, ORDERS).await);
}

/// The paces the projector has counted.
async fn fetch_paces(addr: &str) -> f64 {
    counted(addr, "factline_projector_fetch_paces_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_keeping_up_paces_its_fetches_and_applies_what_is_written_meanwhile() {
    let mut fixture = Fixture::new(3).await;
    let (rest, url, addr, mut child) = started_on_half(&mut fixture).await;
    // each round: records arrive, are applied, and the projector, having read every partition
    // to its end, pauses its fetches for a pace (the defaults, as `make up` runs it)
    for chunk in rest.chunks(rest.len().div_ceil(4)) {
        let seen = fetch_paces(&addr).await;
        fixture.produce_all(chunk).await;
        let ends = fixture.ends_for(&OrderSummaryProjection);
        wait_caught_up(&url, order_summary::NAME, order_summary::VERSION, &ends).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while fetch_paces(&addr).await <= seen {
            assert!(child.0.try_wait().unwrap().is_none(), "projector exited");
            assert!(
                Instant::now() < deadline,
                "a projector that read every partition to its end never paced its fetches"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    sigterm(&mut child);
    let reference = reference(&fixture).await;
    assert_eq!(dump(&url, ORDERS).await, dump(&reference, ORDERS).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_projector_whose_partitions_move_in_a_rebalance_applies_what_is_written_after() {
    let mut fixture = Fixture::new(4).await;
    let events = dataset::shop(8, 60);
    let (first, rest) = events.split_at(events.len() / 2);
    fixture.produce_all(first).await;
    let (_, url) = fresh_schema().await;
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let mut a = spawn_like_services(&fixture, &url, &addr_a);
    wait_caught_up(
        &url,
        order_summary::NAME,
        order_summary::VERSION,
        &fixture.ends_for(&OrderSummaryProjection),
    )
    .await;
    // the first instance is in its pause cycle (paused or probing) when the second joins:
    // its partitions are revoked paused and some come back to it
    wait_idle_cycle(&addr_a, &mut a).await;
    let mut b = spawn_like_services(&fixture, &url, &addr_b);
    wait_shared(&fixture, &addr_a, &addr_b).await;
    // written to every partition: the ones the first instance got back included
    fixture.produce_all(rest).await;
    let ends = fixture.ends_for(&OrderSummaryProjection);
    wait_caught_up(&url, order_summary::NAME, order_summary::VERSION, &ends).await;
    sigterm(&mut a);
    sigterm(&mut b);
    let reference = reference(&fixture).await;
    assert_eq!(dump(&url, ORDERS).await, dump(&reference, ORDERS).await);
}

/// A registry proxy: forwards every request to the real registry, except that while `failing`
/// holds it answers requests for a schema by id with `status` (and counts them).
struct RegistryProxy {
    url: String,
    failing: Arc<AtomicBool>,
    status: Arc<AtomicU16>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    failing: Arc<AtomicBool>,
    status: Arc<AtomicU16>,
    refused: Arc<AtomicUsize>,
}

async fn forward(State(state): State<ProxyState>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if path.starts_with("/schemas/ids/") && state.failing.load(Ordering::SeqCst) {
        state.refused.fetch_add(1, Ordering::SeqCst);
        let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap();
        let body = serde_json::json!({"error_code": 40403, "message": "Schema not found"});
        return (status, axum::Json(body)).into_response();
    }
    let method = request.method().clone();
    let content_type = request.headers().get("content-type").cloned();
    let body = axum::body::to_bytes(request.into_body(), 1 << 24)
        .await
        .unwrap();
    let mut upstream = state
        .http
        .request(method, format!("{}{path}", state.upstream))
        .body(body);
    if let Some(ct) = content_type {
        upstream = upstream.header("content-type", ct);
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
            let content_type = answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let bytes = answer.bytes().await.unwrap_or_default();
            (status, [("content-type", content_type)], bytes).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

impl RegistryProxy {
    async fn start(upstream: &str, status: u16) -> RegistryProxy {
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            failing: Arc::new(AtomicBool::new(true)),
            status: Arc::new(AtomicU16::new(status)),
            refused: Arc::new(AtomicUsize::new(0)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        RegistryProxy {
            url,
            failing: state.failing,
            status: state.status,
            refused: state.refused,
            task,
        }
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    async fn wait_refused(&self, at_least: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.refused() < at_least {
            assert!(
                Instant::now() < deadline,
                "the projector asked the registry only {} times",
                self.refused()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RegistryProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The dead letters recorded so far (none while the runtime's tables do not exist yet).
async fn dead_letters(url: &str) -> Vec<String> {
    connect(url)
        .await
        .query(
            "SELECT row_to_json(t)::text FROM (SELECT \"offset\", error \
             FROM factline_projector_dead_letters ORDER BY \"offset\") t",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_404_and_401_for_a_schema_id_delay_records_but_never_dead_letter_them() {
    let mut fixture = Fixture::new(1).await;
    let events = dataset::shop(3, 6);
    fixture.produce_all(&events).await;
    let proxy = RegistryProxy::start(&fixture.registry, 404).await;
    let (_, url) = fresh_schema().await;
    let mut config = fixture.config(&url);
    config.schema_registry_url = proxy.url.clone();
    let addr = free_addr();
    config.http_addr = Some(addr.parse().unwrap());
    assert_eq!(
        config.registry_retry_ms, 300_000,
        "the shipped default bound"
    );
    let running = start(config, OrderSummaryProjection);

    // asked again and again (the failure is not cached), and health says why it waits
    proxy.wait_refused(3).await;
    let h = wait_health(&addr, "health never said retrying", |h| {
        h["state"] == "retrying"
            && h["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("schema id"))
    })
    .await;
    assert_eq!(
        h["batches"], 0,
        "nothing committed while the schema is missing"
    );
    assert_eq!(sum_positions(&url).await, 0, "records were skipped");
    // a credential problem next
    proxy.status.store(401, Ordering::SeqCst);
    let seen = proxy.refused();
    proxy.wait_refused(seen + 2).await;
    assert_eq!(sum_positions(&url).await, 0, "records were skipped");
    proxy.failing.store(false, Ordering::SeqCst);

    wait_caught_up(
        &url,
        order_summary::NAME,
        order_summary::VERSION,
        &fixture.ends_for(&OrderSummaryProjection),
    )
    .await;
    running.stop().await;
    assert_eq!(dead_letters(&url).await, Vec::<String>::new());
    let reference = reference(&fixture).await;
    assert_eq!(dump(&url, ORDERS).await, dump(&reference, ORDERS).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_retry_bound_a_record_is_dead_lettered_and_its_schema_id_is_not_poisoned() {
    let mut fixture = Fixture::new(1).await;
    let (_, first) = fixture.produce(&placed("o-1", "c-1", 1, 100, 1)).await;
    let proxy = RegistryProxy::start(&fixture.registry, 404).await;
    let (_, url) = fresh_schema().await;
    let mut config = fixture.config(&url);
    config.schema_registry_url = proxy.url.clone();
    config.registry_retry_ms = 1500;
    let running = start(config, OrderSummaryProjection);

    let deadline = Instant::now() + Duration::from_secs(60);
    let letters = loop {
        let letters = dead_letters(&url).await;
        if !letters.is_empty() {
            break letters;
        }
        assert!(
            Instant::now() < deadline,
            "never dead-lettered: a silent stall"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].contains(&format!("\"offset\":{first}")) && letters[0].contains("retry bound"),
        "{letters:?}"
    );
    assert!(proxy.refused() >= 2, "retried before dead-lettering");

    // the registry heals: a later record with the same schema id is applied
    proxy.failing.store(false, Ordering::SeqCst);
    fixture.produce(&placed("o-2", "c-1", 1, 200, 2)).await;
    wait_caught_up(
        &url,
        order_summary::NAME,
        order_summary::VERSION,
        &fixture.ends_for(&OrderSummaryProjection),
    )
    .await;
    running.stop().await;
    let ids = dump(&url, "SELECT order_id FROM order_summary ORDER BY order_id").await;
    assert_eq!(ids, vec![r#"{"order_id":"o-2"}"#]);
    assert_eq!(dead_letters(&url).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_slots_are_unique_while_held_and_free_again_when_a_holder_dies() {
    use factline_projectors::membership;
    let pg: tokio_postgres::Config = common::env("DATABASE_URL").parse().unwrap();
    let group = format!("t{}_slots-v1", uuid::Uuid::new_v4().simple());
    let first = membership::claim(&pg, &group).await.unwrap();
    let second = membership::claim(&pg, &group).await.unwrap();
    assert_eq!((first.slot, second.slot), (0, 1));
    assert_eq!(first.instance_id, format!("{group}-0"));
    assert_ne!(first.instance_id, second.instance_id);

    // the first holder's connection dies (as with kill -9 or a database restart)
    let admin = connect(&common::env("DATABASE_URL")).await;
    let killed = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND classid = hashtext($1)::oid \
               AND objid = 0 AND objsubid = 2",
            &[&group],
        )
        .await
        .unwrap();
    assert_eq!(killed, 1, "the slot's lock holder was not found");
    let reason = tokio::time::timeout(
        Duration::from_secs(30),
        membership::wait_lost(Some(first.lost_signal())),
    )
    .await
    .expect("the lost lock was not noticed");
    assert!(reason.contains("lock connection"), "{reason}");
    // a new claim takes the freed slot, not the held one
    let deadline = Instant::now() + Duration::from_secs(30);
    let again = loop {
        let claim = membership::claim(&pg, &group).await.unwrap();
        if claim.slot == 0 {
            break claim;
        }
        assert!(Instant::now() < deadline, "slot 0 was not freed");
        drop(claim);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(again.instance_id, first.instance_id);
    assert_eq!(second.lost_reason(), None);
}

/// The backend holding the advisory lock of `group`'s slot 0, if any.
async fn slot_holder(admin: &tokio_postgres::Client, group: &str) -> Option<i32> {
    admin
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND classid = hashtext($1)::oid AND objid = 0 AND objsubid = 2",
            &[&group],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_whose_slot_lock_is_lost_claims_it_again_and_goes_on() {
    let mut fixture = Fixture::new(2).await;
    let events = dataset::shop(6, 30);
    let (before, after) = events.split_at(events.len() / 2);
    fixture.produce_all(before).await;
    let (_, url) = fresh_schema().await;
    let mut config = fixture.config(&url);
    let addr = free_addr();
    config.http_addr = Some(addr.parse().unwrap());
    let group = config.group_id(order_summary::NAME, order_summary::VERSION);
    let running = start(config, OrderSummaryProjection);
    wait_caught_up(
        &url,
        order_summary::NAME,
        order_summary::VERSION,
        &fixture.ends_for(&OrderSummaryProjection),
    )
    .await;
    let admin = connect(&common::env("DATABASE_URL")).await;
    let holder = slot_holder(&admin, &group).await.expect("slot 0 held");
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&holder])
        .await
        .unwrap();

    // it notices, closes its member, claims the slot again on a new connection and rejoins
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = slot_holder(&admin, &group).await;
        if now.is_some_and(|pid| pid != holder) {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was not claimed again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fixture.produce_all(after).await;
    wait_caught_up(
        &url,
        order_summary::NAME,
        order_summary::VERSION,
        &fixture.ends_for(&OrderSummaryProjection),
    )
    .await;
    let h = wait_health(&addr, "not running again", |h| h["state"] == "running").await;
    assert_eq!(h["instance_id"], format!("{group}-0"));
    running.stop().await;
    let reference = reference(&fixture).await;
    assert_eq!(dump(&url, ORDERS).await, dump(&reference, ORDERS).await);
}

/// A stored position past a partition's end (the topic was deleted and created again, or the
/// broker lost records) stops the projector with an error naming the partition and both
/// offsets, instead of taking every record written from then on for an applied one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_position_past_the_log_end_stops_the_projector_naming_it() {
    let mut fixture = Fixture::new(1).await;
    fixture.produce(&placed("o-1", "c-1", 1, 100, 1)).await;
    fixture.produce(&placed("o-2", "c-1", 1, 100, 2)).await;
    let (_, url) = fresh_schema().await;
    let ends = fixture.ends_for(&OrderSummaryProjection);
    let running = start(fixture.config(&url), OrderSummaryProjection);
    wait_caught_up(&url, order_summary::NAME, order_summary::VERSION, &ends).await;
    running.stop().await;

    // the log as this projector knew it is gone: its position is 5 past the end
    let orders = fixture.topic("orders");
    let end = ends[&(orders.clone(), 0)];
    connect(&url)
        .await
        .execute(
            "UPDATE factline_projector_positions SET next_offset = next_offset + 5 \
             WHERE topic = $1",
            &[&orders],
        )
        .await
        .unwrap();
    let refused = common::run_until_refused(
        fixture.config(&url),
        OrderSummaryProjection,
        "its stored position is past the log's end",
    )
    .await;
    let message = format!("{refused}: {:?}", std::error::Error::source(&refused));
    assert!(
        message.contains(&format!(
            "{orders}/0: this projector's stored position {} is past the end of the log ({end})",
            end + 5
        )),
        "{message}"
    );
}
