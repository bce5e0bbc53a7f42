//! `GET /status`, `/status/history` and the dashboard's actions against a
//! small fleet in trouble: one tenant syncing, one paused, one whose
//! database refuses connections.

use serde_json::Value;

use crate::support::{
    eventually, http_request, sample, set_tenant_color, wait_streaming, Bridge, TestEnv,
};

pub(crate) const TOKEN: &str = "dash-token";

/// Tenants 1 and 4 sync (with a row each), 2 is paused, 3's database
/// accepts no connections; the bridge runs with the token and a check
/// every second, and every tenant has been checked once.
pub(crate) async fn troubled_fleet(name: &str) -> (TestEnv, Bridge, u16) {
    let env = TestEnv::new(name, 4).await;
    set_tenant_color(&env, 0, "#112233").await;
    set_tenant_color(&env, 3, "#445566").await;
    for args in [&["setup"][..], &["direction", "set", "2", "paused"]] {
        let (ok, out) = env.bridge_command(args);
        assert!(ok, "{out}");
    }
    crate::support::connect("postgres")
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            env.tenants[2].database
        ))
        .await
        .unwrap();
    env.write_config("[check]\ninterval_secs = 1\nrate = 0");
    env.set_http(&format!("token = \"{TOKEN}\""));
    let bridge = env.start_bridge();
    let port = bridge.http_port().await;
    wait_streaming(&bridge, 4).await;
    eventually(
        "every tenant checked and the synced rows consistent",
        || async {
            let status = status(port, "/status").await?;
            let tenants = status["tenants"].as_array()?;
            let checked = tenants.iter().all(|t| t["check"].is_object());
            let synced = [0, 3]
                .iter()
                .all(|&i| tenants[i]["check"]["state"] == "consistent");
            (checked && synced).then_some(())
        },
    )
    .await;
    (env, bridge, port)
}

/// The JSON of a read-only endpoint, `None` while it does not answer 200.
pub(crate) async fn status(port: u16, path: &str) -> Option<Value> {
    let response = http_request(port, "GET", path, None, "").await?;
    if !response.starts_with("HTTP/1.0 200") && !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()
}

fn ids(status: &Value) -> Vec<String> {
    status["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_every_tenant_with_reader_applier_and_check_state() {
    let (env, mut bridge, port) = troubled_fleet("dashstatus").await;
    let all = eventually("the down tenant reported unreachable", || async {
        let s = status(port, "/status").await?;
        (s["summary"]["unreachable"] == 1).then_some(s)
    })
    .await;
    assert_eq!(all["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(all["kafka"]["topic"], env.topic.name.as_str());
    assert_eq!(all["kafka"]["reachable"], true);
    assert_eq!(all["landlord"]["database"], env.landlord_db.as_str());
    assert_eq!(all["landlord"]["reader"]["state"], "streaming", "{all}");
    assert!(all["roles"].as_array().unwrap().len() == 2, "{all}");
    let summary = &all["summary"];
    assert_eq!(summary["tenants"], 4, "{summary}");
    assert_eq!(summary["paused"], 1, "{summary}");
    assert_eq!(summary["consistent"], 2, "{summary}");
    assert_eq!(ids(&all), ["1", "2", "3", "4"]);

    let tenants = all["tenants"].as_array().unwrap();
    let synced = &tenants[0];
    assert_eq!(synced["slug"], "tenant1");
    assert_eq!(synced["database"]["name"], env.tenants[0].database.as_str());
    assert_eq!(synced["database"]["host"], "127.0.0.1");
    assert!(synced["database"]["port"].is_u64(), "{synced}");
    assert_eq!(synced["direction"], "both");
    assert_eq!(synced["direction_override"], false);
    assert_eq!(synced["reader"]["state"], "streaming");
    assert_eq!(synced["applier_state"], "live");
    assert_eq!(synced["check"]["tenant_present"], true);
    assert_eq!(synced["check"]["landlord_present"], true);
    assert!(synced["last_synced"]["to_landlord"].is_string(), "{synced}");
    assert!(synced["last_error"].is_null(), "{synced}");

    let paused = &tenants[1];
    assert_eq!(paused["direction"], "paused");
    assert_eq!(paused["direction_override"], true);
    assert_eq!(paused["check"]["state"], "paused");

    let down = &tenants[2];
    assert_eq!(down["reader"]["state"], "down", "{down}");
    // Unreachable once a change for it failed; until then its first
    // reconcile fails and is retried.
    let applier = down["applier_state"].as_str().unwrap();
    assert!(
        ["unreachable", "reconcile_pending"].contains(&applier),
        "{down}"
    );
    let error = down["last_error"].as_str().unwrap();
    assert!(error.contains(&env.tenants[2].database), "{error}");
    assert_eq!(down["check"]["state"], "unreachable");

    let by_state = status(port, "/status?state=down").await.unwrap();
    assert_eq!(ids(&by_state), ["3"]);
    assert_eq!(by_state["matching"], 1);
    assert_eq!(by_state["summary"]["tenants"], 4, "the summary is global");
    let by_text = status(port, "/status?q=TENANT2").await.unwrap();
    assert_eq!(ids(&by_text), ["2"]);
    let paged = status(port, "/status?limit=1&page=2").await.unwrap();
    assert_eq!(ids(&paged), ["2"]);
    assert_eq!(paged["pages"], 4);
    let history = status(port, "/status/history").await.unwrap();
    assert!(
        !history["points"].as_array().unwrap().is_empty(),
        "{history}"
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_need_the_token_and_are_audited_and_counted() {
    let (_env, mut bridge, port) = troubled_fleet("dashactions").await;
    for path in [
        "/tenants/1/check",
        "/tenants/1/repair",
        "/dead-letters/redrive",
    ] {
        let anonymous = http_request(port, "POST", path, None, "").await.unwrap();
        assert!(anonymous.contains(" 401 "), "{path}: {anonymous}");
        let wrong = http_request(port, "POST", path, Some("guess"), "")
            .await
            .unwrap();
        assert!(wrong.contains(" 401 "), "{path}: {wrong}");
    }
    let check = http_request(port, "POST", "/tenants/1/check", Some(TOKEN), "")
        .await
        .unwrap();
    assert!(
        check.contains(" 200 ") && check.contains("\"consistent\""),
        "{check}"
    );
    let repair = http_request(port, "POST", "/tenants/4/repair", Some(TOKEN), "")
        .await
        .unwrap();
    assert!(repair.contains(" 200 "), "{repair}");
    let unknown = http_request(port, "POST", "/tenants/99/check", Some(TOKEN), "")
        .await
        .unwrap();
    assert!(unknown.contains(" 404 "), "{unknown}");
    let redrive = http_request(port, "POST", "/dead-letters/redrive", Some(TOKEN), "")
        .await
        .unwrap();
    assert!(redrive.contains("{\"redriven\":0}"), "{redrive}");

    let metrics = bridge.metrics().await;
    let count = |action: &str, outcome: &str| {
        let series =
            format!("cdc_admin_actions_total{{action=\"{action}\",outcome=\"{outcome}\"}}");
        sample(&metrics, &series)
    };
    assert_eq!(count("check", "denied"), Some(2.0), "{metrics}");
    assert_eq!(count("check", "ok"), Some(1.0));
    assert_eq!(count("check", "rejected"), Some(1.0));
    assert_eq!(count("repair", "ok"), Some(1.0));
    assert_eq!(count("redrive", "ok"), Some(1.0));
    assert_eq!(
        bridge.log_lines_with(&["admin action", "outcome=\"denied\""]),
        6
    );
    for series in [
        "cdc_dead_letters_waiting 0",
        "cdc_applier_consumer_lag{partition=\"0\"}",
        "cdc_replication_lag_seconds{slot=",
    ] {
        let present = eventually(series, || async {
            bridge.metrics().await.contains(series).then_some(())
        });
        present.await;
    }
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
