//! Time limits on PostgreSQL: a database that accepts connections and never answers (a TCP
//! proxy in this test that black-holes traffic) makes queries answer `503` with `Retry-After`
//! and a JSON body naming the limit, within the configured bound, instead of hanging.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to PostgreSQL that forwards until black-holed, then accepts connections and
/// passes nothing more in either direction (connections stay open, nothing is answered).
struct Proxy {
    addr: std::net::SocketAddr,
    black_hole: Arc<AtomicBool>,
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    black_hole: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if black_hole.load(Ordering::SeqCst) {
            // swallow everything from now on, keeping the connection open
            continue;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    async fn start(target: String, black_hole: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let black_hole = Arc::new(AtomicBool::new(black_hole));
        let flag = black_hole.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(Ordering::SeqCst) {
                    held.push(client); // accepted, never answered
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, flag.clone()));
                tokio::spawn(pipe(server_read, client_write, flag.clone()));
            }
        });
        Proxy { addr, black_hole }
    }
}

/// The host:port of `DATABASE_URL`.
fn database_target() -> String {
    let config: tokio_postgres::Config = env("DATABASE_URL").parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        #[allow(unreachable_patterns)]
        _ => panic!("DATABASE_URL must name a TCP host for this test"),
    };
    format!(
        "{host}:{}",
        config.get_ports().first().copied().unwrap_or(5432)
    )
}

/// `url` with its host:port replaced by the proxy's.
fn through(url: &str, proxy: &Proxy) -> String {
    url.replacen(&database_target(), &proxy.addr.to_string(), 1)
}

const STATEMENT_MS: u64 = 1000;
const WAIT_MS: u64 = 500;
const CONNECT_MS: u64 = 500;

fn limits(config: &mut factline_read_api::Config) {
    config.statement_timeout = Duration::from_millis(STATEMENT_MS);
    config.database_wait_timeout = Duration::from_millis(WAIT_MS);
    config.database_connect_timeout = Duration::from_millis(CONNECT_MS);
}

/// The longest a request may take: every limit hit once, the client's grace past the
/// statement timeout, and slack for a loaded machine.
fn bound() -> Duration {
    Duration::from_millis(WAIT_MS + CONNECT_MS + STATEMENT_MS + 500) + Duration::from_secs(5)
}

/// GET that gives up (failing the test) well past the bound instead of hanging with the server.
async fn get(world: &World, path: &str) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", world.read))
        .timeout(bound() * 3)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: no answer within {:?}: {e}", bound() * 3));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

async fn assert_timed_out(world: &World, path: &str, what: &str) {
    let started = Instant::now();
    let (status, headers, body) = get(world, path).await;
    let took = started.elapsed();
    println!("{path}: {status} in {took:?} ({what})");
    assert_eq!(status, 503, "{path}: {body}");
    assert!(took <= bound(), "{path} took {took:?}");
    assert_eq!(header(&headers, "retry-after"), "1", "{path}");
    assert_eq!(body["store"], "postgresql", "{path}: {body}");
    assert_eq!(body["timeout"], what, "{path}: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within"),
        "{path}: {body}"
    );
    // the freshness headers are there on a 503 too
    assert!(
        !header(&headers, "factline-lag-events").is_empty(),
        "{path}: {headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_answers_gets_a_503_within_the_bound() {
    let proxy = Proxy::start(database_target(), true).await;
    let world = World::start(&[], |config| {
        limits(config);
        config.database_url = through(&config.database_url, &proxy);
    })
    .await;
    for path in [
        "/orders/o-1",
        "/customers/c-1",
        "/customers/c-1/orders",
        "/views/customer_directory",
        "/views/customer_directory/c-1",
    ] {
        assert_timed_out(&world, path, "connecting").await;
    }
    let started = Instant::now();
    let (status, _, body) = get(&world, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["postgres"], false);
    assert!(started.elapsed() <= bound());
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_mid_use_gets_a_503_within_the_bound() {
    let proxy = Proxy::start(database_target(), false).await;
    let world = World::start(&[Projector::OrderSummary], |config| {
        limits(config);
        config.database_pool_size = 2;
        config.database_url = through(&config.database_url, &proxy);
    })
    .await;
    // the read model exists and answers through the proxy, over pooled connections
    world.eventually("/orders/o-1", |s, _| s == 404).await;
    world
        .eventually("/customers/c-1/orders", |s, _| s == 200)
        .await;

    // a statement that runs past the limit (here: waiting on a lock another session holds) is
    // cancelled by the server and answered with a 503 naming the statement timeout
    let locker = factline_testkit::postgres::connect(&world.database_url).await;
    locker
        .batch_execute(
            "BEGIN; \
             DO $$ DECLARE t text; BEGIN \
               FOR t IN SELECT tablename FROM pg_tables \
                        WHERE schemaname = current_schema() AND tablename LIKE 'order_summary%' \
               LOOP EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', t); END LOOP; \
             END $$;",
        )
        .await
        .unwrap();
    assert_timed_out(&world, "/orders/o-1", "statement timeout").await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    world.eventually("/orders/o-1", |s, _| s == 404).await;

    // a database that stops answering altogether: whichever limit a request meets first (a
    // pooled connection's statement, or connecting anew once background tasks used up the
    // pool), every request is answered with a 503 within the bound
    proxy.black_hole.store(true, Ordering::SeqCst);
    for path in [
        "/orders/o-1",
        "/orders/o-2",
        "/customers/c-1/orders",
        "/orders/o-3",
    ] {
        let started = Instant::now();
        let (status, headers, body) = get(&world, path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(started.elapsed() <= bound(), "{path}");
        assert_eq!(header(&headers, "retry-after"), "1");
        assert!(body["timeout_ms"].as_u64().unwrap() > 0, "{body}");
    }

    // once the database answers again, so does the read API
    proxy.black_hole.store(false, Ordering::SeqCst);
    world.eventually("/orders/o-1", |s, _| s == 404).await;
    world.stop().await;
}
