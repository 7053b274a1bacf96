//! A lean HTTP/1.1 load generator on hyper's connection API: every virtual client owns one
//! keep-alive TCP connection (no pool, no TLS, no redirects), so the generator spends as little
//! of the machine's two cores as possible on itself. Closed loop ([`closed_loop`]: N clients,
//! each sends its next request when the previous one is answered) and open loop ([`open_loop`]:
//! requests are scheduled at a fixed rate whatever the answers do, and latency is measured from
//! the scheduled time, so queueing in the generator counts against the server, not for it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// A load generation failure.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Connecting failed.
    #[error("connect {addr}: {source}")]
    Connect {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// One keep-alive connection.
pub struct Conn {
    addr: SocketAddr,
    host: String,
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Opens a connection to `addr`.
    pub async fn open(addr: SocketAddr) -> Result<Conn, LoadError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| LoadError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            addr,
            host: addr.to_string(),
            sender,
        })
    }

    /// Sends one request and reads the whole answer; reconnects once if the server closed the
    /// connection.
    pub async fn send(&mut self, spec: &Spec) -> Result<(u16, Bytes), LoadError> {
        if self.sender.is_closed() || self.sender.ready().await.is_err() {
            *self = Conn::open(self.addr).await?;
        }
        let mut builder = Request::builder()
            .method(spec.method.clone())
            .uri(spec.path.as_str())
            .header(hyper::header::HOST, self.host.as_str());
        if spec.body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder.body(Full::new(spec.body.clone().unwrap_or_default()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// JSON body.
    pub body: Option<Bytes>,
}

impl Spec {
    /// `GET path`.
    pub fn get(path: String) -> Spec {
        Spec {
            method: Method::GET,
            path,
            body: None,
        }
    }

    /// `POST path` with a JSON body.
    pub fn post(path: String, body: Vec<u8>) -> Spec {
        Spec {
            method: Method::POST,
            path,
            body: Some(Bytes::from(body)),
        }
    }
}

/// Builds request number `seq` of client `client`.
pub type MakeRequest = Arc<dyn Fn(usize, u64) -> Spec + Send + Sync>;
/// Judges an answer: how many items it carried successfully (0 = failed).
pub type Judge = Arc<dyn Fn(u16, &Bytes) -> u64 + Send + Sync>;

/// A latency histogram in microseconds (1 µs to 60 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid histogram bounds")
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests completed in the measured window.
    pub requests: u64,
    /// Requests judged successful.
    pub ok: u64,
    /// Items carried by successful requests (commands in a batch; 1 per simple request).
    pub items: u64,
    /// Failures by status code or error.
    pub failures: BTreeMap<String, u64>,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Latency of every measured request, µs.
    pub latency: Histogram<u64>,
}

impl LoadResult {
    fn new() -> LoadResult {
        LoadResult {
            requests: 0,
            ok: 0,
            items: 0,
            failures: BTreeMap::new(),
            elapsed: Duration::ZERO,
            latency: histogram(),
        }
    }

    fn merge(&mut self, other: LoadResult) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.items += other.items;
        for (k, v) in other.failures {
            *self.failures.entry(k).or_default() += v;
        }
        let _ = self.latency.add(&other.latency);
    }

    fn record(&mut self, outcome: &Result<(u16, Bytes), LoadError>, judge: &Judge, took: Duration) {
        self.requests += 1;
        let _ = self.latency.record((took.as_micros() as u64).max(1));
        match outcome {
            Ok((status, body)) => {
                let items = judge(*status, body);
                if items > 0 {
                    self.ok += 1;
                    self.items += items;
                } else {
                    *self.failures.entry(format!("status {status}")).or_default() += 1;
                }
            }
            Err(error) => *self.failures.entry(short(error)).or_default() += 1,
        }
    }

    /// Items per second over the window.
    pub fn items_per_second(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

fn short(error: &LoadError) -> String {
    let text = error.to_string();
    text.chars().take(60).collect()
}

/// `clients` clients, each on its own connection, send requests back to back for `warmup` (not
/// measured) then `duration` (measured).
pub async fn closed_loop(
    addr: SocketAddr,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    make: MakeRequest,
    judge: Judge,
) -> Result<LoadResult, LoadError> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::open(addr).await?);
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(client, mut conn)| {
            let make = make.clone();
            let judge = judge.clone();
            tokio::spawn(async move {
                let mut result = LoadResult::new();
                let mut seq = 0u64;
                loop {
                    let sent = Instant::now();
                    if sent >= deadline {
                        break;
                    }
                    let spec = make(client, seq);
                    seq += 1;
                    let outcome = conn.send(&spec).await;
                    if sent >= measure_from {
                        result.record(&outcome, &judge, sent.elapsed());
                    }
                    if outcome.is_err() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                result
            })
        })
        .collect();
    let mut total = LoadResult::new();
    for task in tasks {
        if let Ok(result) = task.await {
            total.merge(result);
        }
    }
    total.elapsed = Instant::now().saturating_duration_since(measure_from);
    Ok(total)
}

/// Called for every successful open-loop answer: (sequence number, body, when it completed).
pub type OnAccepted = Arc<dyn Fn(u64, &Bytes, Instant) + Send + Sync>;

/// Sends `rate` requests per second for `duration`, on up to `connections` connections, each
/// request at its scheduled time; latency is measured from the scheduled time.
pub async fn open_loop(
    addr: SocketAddr,
    rate: f64,
    duration: Duration,
    connections: usize,
    make: MakeRequest,
    judge: Judge,
    on_accepted: OnAccepted,
) -> Result<LoadResult, LoadError> {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = Conn::open(addr).await?;
        let rx = rx.clone();
        let make = make.clone();
        let judge = judge.clone();
        let on_accepted = on_accepted.clone();
        workers.push(tokio::spawn(async move {
            let mut result = LoadResult::new();
            loop {
                let job = rx.lock().await.recv().await;
                let Some((seq, scheduled)) = job else { break };
                let spec = make(0, seq);
                let outcome = conn.send(&spec).await;
                let done = Instant::now();
                result.record(&outcome, &judge, done.saturating_duration_since(scheduled));
                if let Ok((status, body)) = &outcome {
                    if judge(*status, body) > 0 {
                        on_accepted(seq, body, done);
                    }
                }
            }
            result
        }));
    }
    let start = Instant::now() + Duration::from_millis(20);
    for seq in 0..total {
        let at = start + Duration::from_secs_f64(seq as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        if tx.send((seq, at)).is_err() {
            break;
        }
    }
    drop(tx);
    let mut result = LoadResult::new();
    for worker in workers {
        if let Ok(r) = worker.await {
            result.merge(r);
        }
    }
    result.elapsed = start.elapsed();
    Ok(result)
}
