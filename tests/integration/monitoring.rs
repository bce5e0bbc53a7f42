//! What `config/` ships for monitoring is valid: the alert rules pass
//! `promtool check rules`, the Grafana dashboard is well formed and every
//! one of its queries parses as PromQL (checked by promtool as recording
//! rules), and every metric either uses is one the bridge exports.
//! `scripts/test.sh` installs promtool (Debian's `prometheus` package);
//! without it these tests fail rather than skip.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool_check_rules(file: &Path) -> String {
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is needed ({e}); scripts/test.sh installs it (apt-get install prometheus)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool check rules {}:\n{text}",
        file.display()
    );
    text
}

fn dashboard() -> Value {
    let text =
        std::fs::read_to_string(repo_file("config/grafana/cdc-bridge-dashboard.json")).unwrap();
    serde_json::from_str(&text).expect("the Grafana dashboard is JSON")
}

fn panels(dashboard: &Value) -> &Vec<Value> {
    dashboard["panels"].as_array().expect("panels is a list")
}

#[test]
fn alert_rules_pass_promtool() {
    let out = promtool_check_rules(&repo_file("config/alerts.yml"));
    assert!(out.contains("SUCCESS"), "{out}");
    let rules = std::fs::read_to_string(repo_file("config/alerts.yml")).unwrap();
    for alert in [
        "CdcBridgeSyncBacklog",
        "CdcBridgeApplyFailures",
        "CdcBridgeInconsistencyRatio",
        "CdcBridgeReplicationLagSeconds",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}")),
            "{alert} missing"
        );
    }
}

#[test]
fn grafana_dashboard_is_well_formed() {
    let dashboard = dashboard();
    for key in ["title", "uid"] {
        assert!(
            dashboard[key].as_str().is_some_and(|s| !s.is_empty()),
            "{key}"
        );
    }
    assert!(dashboard["schemaVersion"].is_u64(), "schemaVersion");
    let mut ids = HashSet::new();
    let mut cells = HashSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("numeric id")),
            "duplicate id: {title}"
        );
        assert!(
            ["timeseries", "stat", "gauge", "table"].contains(&panel["type"].as_str().unwrap()),
            "{title}"
        );
        assert_eq!(panel["datasource"]["type"], "prometheus", "{title}");
        let grid = &panel["gridPos"];
        let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| grid[k].as_u64().expect("gridPos"));
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: {grid}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        let refs: HashSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds repeat");
    }
}

#[test]
fn grafana_queries_parse_as_promql() {
    let dashboard = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().expect("every query has an expr");
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$__interval", "1m");
            rules.push_str(&format!(
                "      - record: dashboard:panel{}:{}\n        expr: {}\n",
                panel["id"],
                target["refId"].as_str().unwrap(),
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    let file = std::env::temp_dir().join(format!("cdc-dashboard-rules-{}.yml", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    promtool_check_rules(&file);
}

/// `cdc_…` names in `text`, without histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("cdc_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        names.insert(base.to_string());
    }
    names
}

#[test]
fn alerts_and_dashboard_use_only_metrics_the_bridge_exports() {
    let exported =
        metric_names(&std::fs::read_to_string(repo_file("src/runtime/metrics.rs")).unwrap());
    for file in [
        "config/alerts.yml",
        "config/grafana/cdc-bridge-dashboard.json",
    ] {
        let used = metric_names(&std::fs::read_to_string(repo_file(file)).unwrap());
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the bridge does not export: {unknown:?}"
        );
    }
    let dashboard =
        std::fs::read_to_string(repo_file("config/grafana/cdc-bridge-dashboard.json")).unwrap();
    for new in [
        "cdc_applier_consumer_lag",
        "cdc_replication_lag_seconds",
        "cdc_dead_letters_waiting",
        "cdc_check_inconsistent_ratio",
    ] {
        assert!(dashboard.contains(new), "the dashboard lacks {new}");
    }
}
