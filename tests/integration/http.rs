//! The HTTP endpoint: state-changing actions need the token; read-only
//! endpoints are public unless configured otherwise.

use crate::support;
use crate::support::{eventually, http_port, http_request, set_http, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn changing_a_direction_over_http_requires_the_token() {
    let env = TestEnv::new("httptoken", 1).await;
    let port = http_port(101);
    set_http(&env, port, "token = \"s3cret-token\"");
    let mut bridge = env.start_bridge();
    let health = eventually("endpoint up", || async {
        http_request(port, "GET", "/health", None, "").await
    })
    .await;
    assert!(
        health.contains(" 200 "),
        "read-only endpoints are public: {health}"
    );
    support::wait_streaming(&bridge, 2).await;

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
async fn read_endpoints_can_require_the_token_and_state_changes_are_off_without_one() {
    let env = TestEnv::new("httpread", 1).await;
    let port = http_port(102);
    set_http(&env, port, "token = \"t\"\nprotect_read_endpoints = true");
    let mut bridge = env.start_bridge();
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
    assert!(bridge.stop().success(), "{}", bridge.log_text());

    env.write_config("");
    set_http(&env, port, "");
    let mut bridge = env.start_bridge();
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
