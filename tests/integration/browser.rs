//! The dashboard in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `scripts/test.sh`) driven over the DevTools protocol. The
//! rendered page must show the right summary and every tenant's row, a
//! direction change made through it must reach the landlord only with the
//! token, and the page must raise no JavaScript error. It saves a
//! screenshot (`docs/dashboard.png` is one of these).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::dashboard::{status, troubled_fleet, TOKEN};
use crate::support::{eventually, TestEnv};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium with one page, killed when dropped.
struct Chromium {
    child: Child,
    profile: PathBuf,
    socket: Socket,
    next_id: u64,
    /// JavaScript exceptions and console errors the page reported.
    errors: Vec<String>,
}

impl Chromium {
    async fn launch() -> Chromium {
        let profile = std::env::temp_dir().join(format!(
            "cdc-chromium-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromium ({e}); scripts/test.sh installs it"));
        // Chromium writes the port it chose into the profile.
        let port_file = profile.join("DevToolsActivePort");
        let port: u16 = eventually("Chromium's DevTools port", || async {
            std::fs::read_to_string(&port_file)
                .ok()?
                .lines()
                .next()?
                .parse()
                .ok()
        })
        .await;
        let page_url = eventually("Chromium's page target", || async {
            let body = devtools_get(port, "/json/list").await?;
            let targets: Value = serde_json::from_str(&body).ok()?;
            targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                .as_str()
                .map(str::to_string)
        })
        .await;
        let (socket, _) = tokio_tungstenite::connect_async(page_url.as_str())
            .await
            .unwrap();
        let mut chromium = Chromium {
            child,
            profile,
            socket,
            next_id: 0,
            errors: Vec::new(),
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            chromium.call(domain, json!({})).await;
        }
        chromium
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        chromium
    }

    /// One DevTools command; events that arrive meanwhile are scanned for
    /// errors.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::text(request.to_string()))
            .await
            .unwrap();
        loop {
            let message = self
                .socket
                .next()
                .await
                .expect("DevTools connection open")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            if message["id"] == id {
                assert!(message["error"].is_null(), "{method}: {message}");
                return message["result"].clone();
            }
            match message["method"].as_str() {
                Some("Runtime.exceptionThrown") => self.errors.push(message["params"].to_string()),
                // A refused request shows as a network error: that one is
                // meant; the page's own errors are not.
                Some("Log.entryAdded")
                    if message["params"]["entry"]["level"] == "error"
                        && message["params"]["entry"]["source"] != "network" =>
                {
                    self.errors.push(message["params"].to_string())
                }
                _ => {}
            }
        }
    }

    /// Evaluates `expression` in the page (promises awaited); its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = std::time::Instant::now() + crate::support::DEADLINE;
        loop {
            let value = self.eval(expression).await;
            if !value.is_null() && value != false {
                return value;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.profile).ok();
    }
}

/// GET on the DevTools HTTP endpoint (which wants a `Host` header and
/// keeps the connection open): the body.
async fn devtools_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let read = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut chunk));
        let n = read.await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().ok())
            })??;
            if body.len() >= length {
                return Some(body.to_string());
            }
        }
    }
}

/// Cards and rows as the page shows them.
const READ_PAGE: &str = r#"(() => {
  const cards = {};
  for (const card of document.querySelectorAll('[data-card]'))
    cards[card.dataset.card] = card.querySelector('.value').textContent;
  const rows = [...document.querySelectorAll('#rows tr')].map((tr) => {
    const row = { tenant: tr.dataset.tenant };
    for (const td of tr.querySelectorAll('td[data-field]')) row[td.dataset.field] = td.textContent;
    row.full_error = tr.querySelector('td[data-field="error"]').title;
    return row;
  });
  return { cards, rows };
})()"#;

/// The tenant's direction override in the landlord (`None`: the default).
async fn direction_of(env: &TestEnv, tenant: &str) -> Option<String> {
    env.landlord()
        .await
        .query_opt(
            "SELECT direction FROM cdc_bridge.tenant_directions WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

/// Picks `direction` in tenant 1's row and presses its Set button.
fn set_direction_of_tenant_1(direction: &str) -> String {
    format!(
        r#"(() => {{
  const row = document.querySelector('#rows tr[data-tenant="1"]');
  const select = row.querySelector('select[data-role="direction"]');
  select.value = '{direction}';
  select.dispatchEvent(new Event('change'));
  row.querySelector('button[data-action="direction"]').click();
  return true;
}})()"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_the_fleet_and_changes_a_direction_only_with_the_token() {
    let (env, mut bridge, port) = troubled_fleet("dashbrowser").await;
    eventually("the down tenant counted unreachable", || async {
        (status(port, "/status").await?["summary"]["unreachable"] == 1).then_some(())
    })
    .await;
    let mut browser = Chromium::launch().await;
    browser
        .call(
            "Page.navigate",
            json!({"url": format!("http://127.0.0.1:{port}/")}),
        )
        .await;
    browser
        .wait_for(
            "the page to load its status",
            "document.body && document.body.dataset.loaded === 'true' && document.querySelectorAll('#rows tr').length === 4",
        )
        .await;
    let page = browser.eval(READ_PAGE).await;
    let cards = &page["cards"];
    assert_eq!(cards["tenants"], "4", "{page}");
    assert_eq!(cards["paused"], "1", "{page}");
    assert_eq!(cards["unreachable"], "1", "{page}");
    assert_eq!(cards["consistent"], "50%", "2 of the 4 checked: {page}");
    assert_eq!(cards["lagging"], "0", "{page}");
    assert_eq!(cards["dead_letters"], "0", "{page}");
    assert_eq!(cards["kafka"], "up", "{page}");

    let rows = page["rows"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["tenant"].as_str().unwrap()).collect();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    for (row, tenant) in rows.iter().zip(&env.tenants) {
        assert_eq!(row["slug"], tenant.slug.as_str(), "{row}");
        let database = row["database"].as_str().unwrap();
        assert!(
            database.ends_with(&format!("/{}", tenant.database)),
            "{row}"
        );
    }
    let expect = |index: usize, field: &str, value: &str| {
        assert_eq!(
            rows[index][field],
            value,
            "tenant {}: {}",
            index + 1,
            rows[index]
        );
    };
    for synced in [0, 3] {
        expect(synced, "direction", "both");
        expect(synced, "reader", "streaming");
        expect(synced, "applier", "live");
        expect(synced, "check", "consistent");
        expect(synced, "present", "yes / yes");
        expect(synced, "error", "");
    }
    expect(1, "direction", "pausedoverride");
    expect(1, "check", "paused");
    expect(2, "reader", "down");
    expect(2, "check", "unreachable");
    assert!(
        rows[2]["full_error"]
            .as_str()
            .unwrap()
            .contains("not currently accepting connections"),
        "{}",
        rows[2]
    );

    // Without the token the bridge refuses, and the page says so.
    assert_eq!(direction_of(&env, "1").await, None);
    browser
        .eval(&set_direction_of_tenant_1("to_landlord"))
        .await;
    let refused = browser
        .wait_for(
            "the refusal",
            "document.querySelector('#message').textContent.includes('refused') && document.querySelector('#message').textContent",
        )
        .await;
    assert!(refused.as_str().unwrap().contains("401"), "{refused}");
    let form_shown = browser
        .eval("!document.querySelector('#token-form').classList.contains('hidden')")
        .await;
    assert_eq!(form_shown, true, "the page asks for the token");
    assert_eq!(
        direction_of(&env, "1").await,
        None,
        "refused means unchanged"
    );

    // With the token the same action goes through (the page retries it).
    browser
        .eval(&format!(
            "document.querySelector('#token-input').value = '{TOKEN}'; document.querySelector('#token-save').click(); true"
        ))
        .await;
    browser
        .wait_for(
            "the direction change confirmed",
            "document.querySelector('#message').textContent.includes('set to to_landlord')",
        )
        .await;
    assert_eq!(
        direction_of(&env, "1").await.as_deref(),
        Some("to_landlord")
    );
    browser
        .wait_for(
            "the new direction shown",
            "document.querySelector('#rows tr[data-tenant=\"1\"] td[data-field=\"direction\"]').textContent === 'to_landlordoverride'",
        )
        .await;
    let in_url = browser.eval("location.href").await;
    assert!(!in_url.as_str().unwrap().contains(TOKEN), "{in_url}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    browser.screenshot(&shot).await;
    println!("dashboard screenshot: {}", shot.display());
    assert!(
        browser.errors.is_empty(),
        "JavaScript errors: {:?}",
        browser.errors
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
