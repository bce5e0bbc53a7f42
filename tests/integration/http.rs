//! The HTTP endpoint: state-changing actions need the token; read-only
//! endpoints are public unless configured otherwise.

use crate::support::{eventually, http_request, wait_streaming, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn changing_a_direction_over_http_requires_the_token() {
    let env = TestEnv::new("httptoken", 1).await;
    env.set_http("token = \"s3cret-token\"");
    let mut bridge = env.start_bridge();
    let port = bridge.http_port().await;
    let health = eventually("endpoint up", || async {
        http_request(port, "GET", "/health", None, "").await
    })
    .await;
    assert!(
        health.contains(" 200 "),
        "read-only endpoints are public: {health}"
    );
    wait_streaming(&bridge, 2).await;

    let anonymous = http_request(port, "POST", "/tenants/1/direction", None, "paused")
        .await
        .unwrap();
    assert!(anonymous.contains(" 401 "), "{anonymous}");
    let wrong = http_request(
        port,
        "POST",
        "/tenants/1/direction",
        Some("guess"),
        "paused",
    )
    .await
    .unwrap();
    assert!(wrong.contains(" 401 "), "{wrong}");
    let bad_body = http_request(
        port,
        "POST",
        "/tenants/1/direction",
        Some("s3cret-token"),
        "sideways",
    )
    .await
    .unwrap();
    assert!(bad_body.contains(" 400 "), "{bad_body}");
    let ok = http_request(
        port,
        "POST",
        "/tenants/1/direction",
        Some("s3cret-token"),
        "paused",
    )
    .await
    .unwrap();
    assert!(ok.contains(" 200 "), "{ok}");
    let (_, list) = env.bridge_command(&["direction", "list"]);
    assert!(list.contains("1 (tenant1): paused"), "{list}");
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_health_can_require_the_token_and_state_changes_are_off_without_one() {
    let env = TestEnv::new("httpread", 1).await;
    env.set_http("token = \"t\"\nprotect_read_endpoints = true");
    let mut bridge = env.start_bridge();
    let port = bridge.http_port().await;
    let denied = eventually("endpoint up", || async {
        http_request(port, "GET", "/metrics", None, "").await
    })
    .await;
    assert!(denied.contains(" 401 "), "{denied}");
    let allowed = http_request(port, "GET", "/metrics", Some("t"), "")
        .await
        .unwrap();
    assert!(
        allowed.contains(" 200 ") && allowed.contains("cdc_kafka_up"),
        "{allowed}"
    );
    let health_denied = http_request(port, "GET", "/health", None, "")
        .await
        .unwrap();
    assert!(health_denied.contains(" 401 "), "{health_denied}");
    let health_wrong = http_request(port, "GET", "/health", Some("guess"), "")
        .await
        .unwrap();
    assert!(health_wrong.contains(" 401 "), "{health_wrong}");
    // Healthy once Kafka answered; with the token the answer is the real one.
    wait_streaming(&bridge, 2).await;
    let health = eventually("healthy, with the token", || async {
        http_request(port, "GET", "/health", Some("t"), "")
            .await
            .filter(|r| r.contains(" 200 "))
    })
    .await;
    assert!(health.contains("ok"), "{health}");
    assert!(bridge.stop().success(), "{}", bridge.log_text());

    env.write_config("");
    env.set_http("");
    let mut bridge = env.start_bridge();
    let port = bridge.http_port().await;
    let off = eventually("endpoint up", || async {
        http_request(port, "POST", "/tenants/1/direction", Some("t"), "paused").await
    })
    .await;
    assert!(
        off.contains(" 403 ") && off.contains("set http.token"),
        "{off}"
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
