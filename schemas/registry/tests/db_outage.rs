//! A PostgreSQL that accepts connections but never answers must not hang the registry: every
//! request answers 503 with `Retry-After` within a bound, and the registry serves again once
//! the database answers. Runs against the real PostgreSQL (`DATABASE_URL`) through a TCP proxy
//! that can black-hole traffic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must point at the test PostgreSQL (scripts/stack.sh env)")
}

/// A TCP proxy to PostgreSQL; while `black` holds it accepts connections and reads what
/// clients send, but forwards nothing in either direction.
struct BlackHole {
    addr: std::net::SocketAddr,
    black: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    black: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while black.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl BlackHole {
    async fn start(upstream: String) -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let black = Arc::new(AtomicBool::new(false));
        let flag = black.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let (upstream, flag) = (upstream.clone(), flag.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pump(ri, wo, flag.clone()), pump(ro, wi, flag));
                });
            }
        });
        BlackHole { addr, black, task }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The database URL with its host and port replaced by the proxy's.
fn through(proxy: std::net::SocketAddr) -> (String, String) {
    let url = database_url();
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("a TCP host is needed: {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let upstream = format!("{host}:{port}");
    (url.replacen(&upstream, &proxy.to_string(), 1), upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_answers_503_with_retry_after_then_recovers() {
    let (_, upstream) = through("127.0.0.1:1".parse().unwrap());
    let proxy = BlackHole::start(upstream).await;
    let (url, _) = through(proxy.addr);
    assert!(url.contains(&proxy.addr.to_string()), "{url}");
    let schema = format!("registry_blackhole_{}", std::process::id());
    let (addr, server) = factline_registry::spawn(&url, &schema).await.unwrap();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let subject = "blackhole-value";
    let body = json!({"schema": r#"{"type":"record","name":"B","fields":[{"name":"a","type":"string"}]}"#});
    let registered: Value = http
        .post(format!("{base}/subjects/{subject}/versions"))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = registered["id"].as_i64().expect("registered");

    proxy.black.store(true, Ordering::SeqCst);
    // more requests than the pool has connections: some wait for the pool, some for a query
    let mut calls = Vec::new();
    for i in 0..24 {
        let (http, base, body) = (http.clone(), base.clone(), body.clone());
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let request = if i % 4 == 0 {
                http.post(format!("{base}/subjects/{subject}/versions"))
                    .header("content-type", "application/vnd.schemaregistry.v1+json")
                    .body(body.to_string())
            } else {
                http.get(format!("{base}/schemas/ids/{id}"))
            };
            let answer = tokio::time::timeout(Duration::from_secs(60), request.send())
                .await
                .expect("a request hung on the black-holed database")
                .unwrap();
            (started.elapsed(), answer)
        }));
    }
    for call in calls {
        let (took, answer) = call.await.unwrap();
        assert_eq!(answer.status().as_u16(), 503, "took {took:?}");
        assert!(
            answer.headers().contains_key("retry-after"),
            "{:?}",
            answer.headers()
        );
        let error: Value = answer.json().await.unwrap();
        assert_eq!(error["error_code"], 50002, "{error}");
        assert!(
            took < Duration::from_secs(30),
            "answered only after {took:?}"
        );
    }

    proxy.black.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = http
            .get(format!("{base}/schemas/ids/{id}"))
            .send()
            .await
            .unwrap();
        if answer.status().is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the registry did not recover: {}",
            answer.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.abort();
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .unwrap();
}
