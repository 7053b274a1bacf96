//! The operational endpoints of a read API running alone in its process (so its Prometheus
//! recorder is the process's): readiness, metrics and the OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use factline_testkit::env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_metrics_and_openapi_are_served() {
    let mut config = factline_read_api::Config::new(
        &env("DATABASE_URL"),
        &env("ELASTICSEARCH_URL"),
        &env("KAFKA_BROKERS"),
    );
    config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = factline_read_api::Server::bind(config).await.unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    // ready once the stores answer and the projector status and watermarks were read once
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let body = loop {
        let ready = get("/readyz").await.unwrap();
        let status = ready.status().as_u16();
        let body: serde_json::Value = ready.json().await.unwrap();
        if status == 200 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        body,
        serde_json::json!({"postgres": true, "elasticsearch": true,
                           "projector_status": true, "watermarks": true})
    );

    let openapi: serde_json::Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    for path in [
        "/orders/{id}",
        "/customers/{id}/orders",
        "/search/orders",
        "/events",
        "/projections",
        "/views/{name}",
    ] {
        assert!(
            openapi["paths"][path]["get"].is_object(),
            "{path} documented"
        );
    }

    assert_eq!(
        get("/orders/o-1?limit=1").await.unwrap().status().as_u16(),
        400
    );
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .contains("factline_read_api_requests_total{route=\"/orders/{id}\",status=\"400\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("factline_read_api_request_duration_seconds_bucket"),
        "{metrics}"
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
