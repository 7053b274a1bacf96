//! The chaos suite: the whole system as `make up` runs it (`scripts/stack.sh`,
//! `scripts/services.sh`, the shipped binaries with their defaults), in an isolated copy of its
//! own (see `stack.rs`), under a stream of orders while
//! - every sample projector is killed with SIGKILL several times and restarted by
//!   `scripts/services.sh start`;
//! - the broker is stopped (SIGTERM: noida-db saves its state) and started again;
//! - two instances of every sample projector share the work.
//!
//! Afterwards every acknowledged order is in `order_summary`, `order_search` and
//! `customer_stats` exactly once with the right totals, every `202` is on its topic, and every
//! projection's lag returns to 0. The tests run one at a time (each starts its own stack).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod readback;
mod shop;
mod stack;

use std::future::Future;
use std::time::{Duration, Instant};

use shop::Shop;
use stack::{running, Stack, PROJECTORS};

/// One isolated stack at a time: the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many times each sample projector is killed.
const KILL_ROUNDS: usize = 3;

fn run_id(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Waits until `done` holds, at most `seconds`.
async fn wait_until<F: Future<Output = bool>>(
    what: &str,
    seconds: u64,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {seconds} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_clean(tally: &shop::Tally, what: &str) {
    assert!(
        tally.violations.is_empty(),
        "{what}: {} answers broke the contract (only 202, or 503 with Retry-After, promptly):\n{}",
        tally.violations.len(),
        tally
            .violations
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projectors_killed_with_sigkill_are_restarted_by_the_scripts_and_lose_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start("sigkill", 1).await;
    let shop = Shop::new(&run_id("k"), 12);
    shop.register_customers(&stack.write).await;
    // Orders keep streaming until every kill is done (so a restarted projector always has
    // records to commit); the pause only keeps the amount small.
    let load = shop.load(&stack.write, 2, Duration::from_millis(250), 100_000);

    let mut kills = 0;
    for round in 0..KILL_ROUNDS {
        for (service, _) in PROJECTORS {
            let state = match round {
                0 => "as started".to_owned(),
                n => format!("restarted after SIGKILL number {n}"),
            };
            stack.wait_committing(service, 1, &state).await;
            let old = stack.sigkill(service).await;
            kills += 1;
            stack.services_start().await;
            let new = stack
                .pid(service)
                .unwrap_or_else(|| panic!("{service} has no PID file after services.sh start"));
            assert!(
                new != old && running(new),
                "scripts/services.sh start did not restart {service} after SIGKILL (pid {old})"
            );
        }
    }
    for (service, _) in PROJECTORS {
        let state = format!("restarted after SIGKILL number {KILL_ROUNDS}");
        stack.wait_committing(service, 1, &state).await;
    }
    load.finish().await;

    let tally = shop.tally();
    assert_clean(&tally, "while projectors were killed");
    stack.wait_caught_up("after the kills").await;
    shop.verify(&stack, &format!("after {kills} SIGKILLs"))
        .await;
    eprintln!(
        "[chaos] {kills} SIGKILLs survived; {} orders, {} commands acknowledged and checked",
        shop.orders_placed(),
        tally.accepted
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_write_load_loses_no_acknowledged_write() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start("broker", 1).await;
    let shop = Shop::new(&run_id("b"), 12);
    shop.register_customers(&stack.write).await;
    let load = shop.load(&stack.write, 4, Duration::from_millis(20), 100_000);
    wait_until("orders acknowledged before the outage", 120, || async {
        shop.orders_placed() >= 50
    })
    .await;

    let before = shop.tally().unavailable;
    // SIGTERM: noida-db saves a snapshot of Kafka and Elasticsearch and exits.
    stack.stack(&["stop", "noida"]).await;
    wait_until("a 503 while the broker is down", 60, || async {
        shop.tally().unavailable > before
    })
    .await;
    let refused = shop.tally().unavailable - before;
    stack.stack(&["start", "noida"]).await;
    let placed = shop.orders_placed();
    wait_until(
        "orders acknowledged again after the broker restarted",
        180,
        || async { shop.orders_placed() >= placed + 50 },
    )
    .await;
    load.finish().await;

    let tally = shop.tally();
    assert_clean(&tally, "around the broker restart");
    let acks = shop.acks();
    let brokers = stack.kafka_brokers.clone();
    let checked = acks.len();
    let missing =
        tokio::task::spawn_blocking(move || readback::missing_from_topics(&brokers, &acks))
            .await
            .expect("read back");
    assert!(
        missing.is_empty(),
        "{} of {checked} acknowledged events are not on their topic after the restart:\n{}",
        missing.len(),
        missing
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    stack.wait_caught_up("after the broker restart").await;
    shop.verify(&stack, "after the broker restart").await;
    eprintln!(
        "[chaos] broker restart: {checked} acknowledged commands found on their topics, {} orders \
         checked in the read models; {} answers were 503 ({refused} during the outage), the \
         slowest answer took {:?}",
        shop.orders_placed(),
        tally.unavailable,
        tally.slowest
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_every_projector_give_the_same_read_models_as_one() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start("twice", 2).await;
    // Few customers: both instances of customer_stats update the same customers at once.
    let shop = Shop::new(&run_id("t"), 3);
    shop.register_customers(&stack.write).await;
    let load = shop.load(&stack.write, 4, Duration::from_millis(10), 100_000);
    // Both instances of every projector take part: each commits batches of its partitions.
    for (service, _) in PROJECTORS {
        for k in 1..=2 {
            stack
                .wait_committing(service, k, "one of two instances")
                .await;
        }
    }
    wait_until("300 orders acknowledged", 180, || async {
        shop.orders_placed() >= 300
    })
    .await;
    load.finish().await;

    let tally = shop.tally();
    assert_clean(&tally, "with two instances");
    stack.wait_caught_up("with two instances").await;
    // What one instance gives is what the acknowledged commands say (the SIGKILL test checks
    // one instance against the same expectations).
    shop.verify(&stack, "with two instances of every projector")
        .await;
    eprintln!(
        "[chaos] two instances: {} orders, {} commands acknowledged and checked",
        shop.orders_placed(),
        tally.accepted
    );
    stack.stop().await;
}
