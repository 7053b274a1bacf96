//! The shop the suite drives, and what it must find afterwards. Customers and a stream of
//! orders (every fifth cancelled, every third of the rest shipped) are sent to the write side
//! as a careful client sends them: every command with an `Idempotency-Key`, retried on `503`
//! after its `Retry-After` until it is acknowledged. Every answer is tallied (a status other
//! than 202 or 503, a 503 without `Retry-After`, or no answer within 30 s is a violation), every
//! 202 is kept, and the read models those acknowledged commands must give are computed here and
//! compared with what the read API serves: `order_summary` (through `/customers/{id}/orders`),
//! `customer_stats` (`/customers/{id}`) and `order_search` (`/search/orders?customer_id=`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::stack::Stack;

/// A `202` answer of the write side.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The command and its key (for messages).
    pub what: String,
    /// The event id it answered.
    pub event_id: String,
    /// Where the broker put the event.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// Counts of the write side's answers.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// `202` answers.
    pub accepted: usize,
    /// `503` answers (each retried).
    pub unavailable: usize,
    /// Answers that break the contract.
    pub violations: Vec<String>,
    /// The longest a request waited for its answer.
    pub slowest: Duration,
}

/// What an order must look like in the read models.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    customer: usize,
    total_cents: i64,
    item_count: i64,
    status: &'static str,
}

#[derive(Default)]
struct State {
    orders: BTreeMap<String, Order>,
    acks: Vec<Ack>,
    tally: Tally,
}

/// The shop of one test.
pub struct Shop {
    run: String,
    customers: Vec<(String, String)>,
    state: Mutex<State>,
    http: reqwest::Client,
}

impl Shop {
    /// A shop with `customers` customers (not registered yet).
    pub fn new(run: &str, customers: usize) -> Arc<Shop> {
        Arc::new(Shop {
            run: run.to_owned(),
            customers: (0..customers)
                .map(|i| (format!("{run}-c{i:02}"), format!("Customer {i} of {run}")))
                .collect(),
            state: Mutex::new(State::default()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers every customer.
    pub async fn register_customers(&self, write: &str) {
        for (id, name) in &self.customers {
            let body =
                json!({"customer_id": id, "email": format!("{id}@example.com"), "name": name});
            self.send(write, "RegisterCustomer", body, &format!("register-{id}"))
                .await;
        }
    }

    /// Sends one command until it is acknowledged, as a client that honours `Retry-After`.
    async fn send(&self, write: &str, command: &str, body: Value, key: &str) -> Ack {
        let what = format!("{command} {key}");
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            assert!(
                Instant::now() < deadline,
                "{what} was not acknowledged within 240 s of retries"
            );
            let started = Instant::now();
            let result = self
                .http
                .post(format!("{write}/commands/{command}"))
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await;
            let waited = started.elapsed();
            {
                let mut state = self.state();
                state.tally.slowest = state.tally.slowest.max(waited);
            }
            let response = match result {
                Ok(response) => response,
                Err(error) => {
                    let violation = if error.is_timeout() {
                        format!("{what}: no answer within 30 s")
                    } else {
                        format!("{what}: {error}")
                    };
                    self.state().tally.violations.push(violation);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            match status {
                202 => {
                    let ack = Ack {
                        what,
                        event_id: answer["event_id"].as_str().unwrap_or_default().to_owned(),
                        topic: answer["topic"].as_str().unwrap_or_default().to_owned(),
                        partition: answer["partition"].as_i64().unwrap_or(-1) as i32,
                        offset: answer["offset"].as_i64().unwrap_or(-1),
                    };
                    let mut state = self.state();
                    state.tally.accepted += 1;
                    state.acks.push(ack.clone());
                    return ack;
                }
                503 => {
                    {
                        let mut state = self.state();
                        state.tally.unavailable += 1;
                        if retry_after.is_none() {
                            state
                                .tally
                                .violations
                                .push(format!("{what}: 503 without Retry-After: {answer}"));
                        }
                    }
                    let seconds = retry_after.unwrap_or(1).clamp(1, 5);
                    tokio::time::sleep(Duration::from_secs(seconds)).await;
                }
                other => {
                    self.state()
                        .tally
                        .violations
                        .push(format!("{what}: {other} {answer}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Places order number `i` and, for some, ships or cancels it; records what it must become
    /// once each command is acknowledged.
    async fn place(&self, write: &str, i: usize) {
        let id = format!("{}-o{i:05}", self.run);
        let customer = i % self.customers.len();
        let lines = 1 + i % 3;
        let items: Vec<Value> = (0..lines)
            .map(|j| {
                json!({"sku": format!("sku-{j}"), "name": format!("Tea blend {j}"),
                       "quantity": 1 + (i + j) % 4,
                       "unit_price_cents": 100 + (i * 37 + j * 11) % 900})
            })
            .collect();
        let total_cents: i64 = (0..lines)
            .map(|j| ((1 + (i + j) % 4) * (100 + (i * 37 + j * 11) % 900)) as i64)
            .sum();
        let item_count: i64 = (0..lines).map(|j| (1 + (i + j) % 4) as i64).sum();
        let body = json!({
            "order_id": id, "customer_id": self.customers[customer].0, "currency": "EUR",
            "items": items,
            "shipping_address": {"line1": "12 Baker St", "city": "London", "postal_code": "NW1", "country": "GB"}
        });
        self.send(write, "PlaceOrder", body, &format!("place-{id}"))
            .await;
        let mut order = Order {
            customer,
            total_cents,
            item_count,
            status: "placed",
        };
        self.state().orders.insert(id.clone(), order.clone());
        if i.is_multiple_of(5) {
            let body = json!({"order_id": id, "reason": "changed my mind"});
            self.send(write, "CancelOrder", body, &format!("cancel-{id}"))
                .await;
            order.status = "cancelled";
        } else if i.is_multiple_of(3) {
            let body = json!({"order_id": id, "carrier": "DHL", "tracking_id": format!("T{i}")});
            self.send(write, "ShipOrder", body, &format!("ship-{id}"))
                .await;
            order.status = "shipped";
        } else {
            return;
        }
        self.state().orders.insert(id, order);
    }

    /// Orders placed (acknowledged) so far.
    pub fn orders_placed(&self) -> usize {
        self.state().orders.len()
    }

    /// The answers so far.
    pub fn tally(&self) -> Tally {
        self.state().tally.clone()
    }

    /// Every `202` so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.state().acks.clone()
    }

    /// Starts `workers` clients placing orders, each pausing `pause` between orders, until
    /// `max_orders` are placed or the load is stopped.
    pub fn load(
        self: &Arc<Shop>,
        write: &str,
        workers: usize,
        pause: Duration,
        max_orders: usize,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let tasks = (0..workers)
            .map(|_| {
                let (shop, stop, next, write) =
                    (self.clone(), stop.clone(), next.clone(), write.to_owned());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= max_orders {
                            break;
                        }
                        shop.place(&write, i).await;
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Compares the read models with the acknowledged commands until they match (60 s at most,
    /// after the projections reported lag 0); panics with every difference otherwise.
    pub async fn verify(&self, stack: &Stack, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let problems = self.differences(stack).await;
            if problems.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let shown: Vec<&String> = problems.iter().take(30).collect();
                panic!(
                    "{what}: the read models differ from the {} acknowledged orders ({} \
                     differences; lag the read API reports: {}), first ones:\n{}",
                    self.orders_placed(),
                    problems.len(),
                    crate::stack::lags(&stack.projections().await),
                    shown
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn differences(&self, stack: &Stack) -> Vec<String> {
        let orders = self.state().orders.clone();
        let mut problems = Vec::new();
        for (c, (customer, name)) in self.customers.iter().enumerate() {
            let expected: BTreeMap<&String, &Order> =
                orders.iter().filter(|(_, o)| o.customer == c).collect();

            // order_summary, exactly once each
            match pages(stack, &format!("/customers/{customer}/orders?limit=100")).await {
                Err(e) => problems.push(format!("order_summary of {customer}: {e}")),
                Ok(items) => {
                    let mut seen = BTreeSet::new();
                    for item in &items {
                        let id = item["order_id"].as_str().unwrap_or_default().to_owned();
                        if !seen.insert(id.clone()) {
                            problems.push(format!("order_summary: {id} listed twice"));
                        }
                        match expected.get(&id) {
                            None => problems.push(format!(
                                "order_summary: {id} of {customer} was never acknowledged"
                            )),
                            Some(o) => {
                                let got = (
                                    item["total_cents"].as_i64(),
                                    item["item_count"].as_i64(),
                                    item["status"].as_str(),
                                );
                                let want =
                                    (Some(o.total_cents), Some(o.item_count), Some(o.status));
                                if got != want {
                                    problems.push(format!(
                                        "order_summary: {id} is (total, items, status) {got:?}, \
                                         expected {want:?}"
                                    ));
                                }
                            }
                        }
                    }
                    for id in expected.keys() {
                        if !seen.contains(*id) {
                            problems.push(format!("order_summary: acknowledged {id} is missing"));
                        }
                    }
                }
            }

            // customer_stats, the right totals
            let live: Vec<&&Order> = expected
                .values()
                .filter(|o| o.status != "cancelled")
                .collect();
            let want = (
                live.len() as i64,
                (expected.len() - live.len()) as i64,
                live.iter().map(|o| o.total_cents).sum::<i64>(),
                name.as_str(),
            );
            match get(stack, &format!("/customers/{customer}")).await {
                Err(e) => problems.push(format!("customer_stats of {customer}: {e}")),
                Ok(body) => {
                    let got = (
                        body["order_count"].as_i64().unwrap_or(-1),
                        body["cancelled_count"].as_i64().unwrap_or(-1),
                        body["lifetime_value_cents"]["EUR"].as_i64().unwrap_or(0),
                        body["name"].as_str().unwrap_or_default(),
                    );
                    if got != want {
                        problems.push(format!(
                            "customer_stats: {customer} is (orders, cancelled, EUR cents, name) \
                             {got:?}, expected {want:?}"
                        ));
                    }
                }
            }

            // order_search, exactly once each, joined with the customer
            match pages(
                stack,
                &format!("/search/orders?customer_id={customer}&limit=100"),
            )
            .await
            {
                Err(e) => problems.push(format!("order_search of {customer}: {e}")),
                Ok(items) => {
                    let mut seen = BTreeSet::new();
                    for item in &items {
                        let id = item["order_id"].as_str().unwrap_or_default().to_owned();
                        if !seen.insert(id.clone()) {
                            problems.push(format!("order_search: {id} found twice"));
                        }
                        match expected.get(&id) {
                            None => problems.push(format!(
                                "order_search: {id} of {customer} was never acknowledged"
                            )),
                            Some(o) => {
                                let got = (
                                    item["total_cents"].as_i64(),
                                    item["status"].as_str(),
                                    item["customer_name"].as_str(),
                                );
                                let want =
                                    (Some(o.total_cents), Some(o.status), Some(name.as_str()));
                                if got != want {
                                    problems.push(format!(
                                        "order_search: {id} is (total, status, customer name) \
                                         {got:?}, expected {want:?}"
                                    ));
                                }
                            }
                        }
                    }
                    for id in expected.keys() {
                        if !seen.contains(*id) {
                            problems.push(format!("order_search: acknowledged {id} is missing"));
                        }
                    }
                }
            }
        }
        problems
    }
}

/// Clients placing orders in the background.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Lets every client finish its current order, then returns (a client's panic is raised).
    pub async fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.join().await;
    }

    /// Waits until every client has placed its share of the orders.
    pub async fn join(self) {
        for task in self.tasks {
            if let Err(error) = task.await {
                if error.is_panic() {
                    std::panic::resume_unwind(error.into_panic());
                }
            }
        }
    }
}

async fn get(stack: &Stack, path: &str) -> Result<Value, String> {
    let response = stack
        .http
        .get(format!("{}{path}", stack.read))
        .send()
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("GET {path}: {status} {body}"))
    }
}

/// Every item of a paginated list.
async fn pages(stack: &Stack, path: &str) -> Result<Vec<Value>, String> {
    let mut items = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..1000 {
        let page = match &next {
            None => path.to_owned(),
            Some(cursor) => format!("{path}&cursor={cursor}"),
        };
        let body = get(stack, &page).await?;
        items.extend(body["items"].as_array().cloned().unwrap_or_default());
        match body["next_cursor"].as_str() {
            Some(cursor) => next = Some(cursor.to_owned()),
            None => return Ok(items),
        }
    }
    Err(format!("{path}: more than 1000 pages"))
}
