// The migration dashboard: reads /status and /status/history every few
// seconds and draws the cards, plots and tenant table; sends the actions
// with the bearer token the operator typed in. Values from the server are
// only ever set as text (never parsed as HTML). The token lives in this
// tab's sessionStorage and goes only into the Authorization header.
"use strict";

const REFRESH_MS = 5000;
const PAGE_SIZE = 200;
const TOKEN_KEY = "cdc-bridge-token";
const DIRECTIONS = ["both", "to_landlord", "to_tenant", "paused"];

const state = {
  status: null,
  history: null,
  page: 1,
  sort: { key: "id", descending: false },
  // Direction picked in a row but not sent yet: survives the refreshes.
  chosen: new Map(),
  pendingAction: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (key === "class") node.className = value;
    else if (key === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = v;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function showMessage(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.classList.toggle("error", Boolean(isError));
  box.classList.remove("hidden");
}

function askForToken(thenRun) {
  state.pendingAction = thenRun || null;
  $("token-form").classList.remove("hidden");
  $("token-input").focus();
}

function updateTokenButton() {
  $("token-button").textContent = token() ? "Forget token" : "Enter token";
}

async function request(method, path, body) {
  const headers = {};
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(path, { method, headers, body, cache: "no-store" });
  const text = await response.text();
  return { ok: response.ok, status: response.status, text };
}

// One action: sent with the token; a refusal says so and asks for it.
async function act(label, method, path, body) {
  try {
    const answer = await request(method, path, body);
    if (answer.status === 401 || answer.status === 403) {
      showMessage(label + ": refused (" + answer.status + "): " + answer.text.trim(), true);
      askForToken(() => act(label, method, path, body));
      return;
    }
    showMessage(label + ": " + (answer.ok ? summarize(answer.text) : "failed (" + answer.status + "): " + answer.text.trim()), !answer.ok);
    refresh();
  } catch (error) {
    showMessage(label + ": " + error, true);
  }
}

function summarize(text) {
  try {
    const report = JSON.parse(text);
    if (report.tenants) {
      return report.tenants.map((t) => "tenant " + t.tenant + " " + t.state + (t.repaired ? " (repaired)" : "") + (t.note ? ": " + t.note : "")).join("; ");
    }
    if ("redriven" in report) return report.redriven + " dead letters sent back to the change topic";
  } catch (_) { /* plain text */ }
  return text.trim();
}

function ago(iso) {
  if (!iso) return "–";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return Math.round(seconds) + " s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " d ago";
}

function bytes(n) {
  if (n < 1024) return n + " B";
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return value.toFixed(1) + " " + units[unit];
}

function duration(seconds) {
  if (seconds < 60) return Math.round(seconds) + " s";
  if (seconds < 3600) return Math.round(seconds / 60) + " min";
  if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h";
  return (seconds / 86400).toFixed(1) + " d";
}

function shorten(text, length) {
  return text.length > length ? text.slice(0, length - 1) + "…" : text;
}

function pill(text, tone) {
  return el("span", { class: "pill " + tone }, text);
}

const READER_TONE = { streaming: "good", snapshotting: "warn", starting: "warn", down: "bad", stopped: "off" };
const APPLIER_TONE = { live: "good", reconcile_pending: "warn", unreachable: "bad" };
const CHECK_TONE = { consistent: "good", paused: "off", unreachable: "bad" };

function setCard(name, value, tone, note) {
  const card = document.querySelector('[data-card="' + name + '"]');
  card.querySelector(".value").textContent = value;
  card.classList.remove("good", "warn", "bad");
  if (tone) card.classList.add(tone);
  if (note !== undefined) {
    const noteBox = card.querySelector(".note");
    if (!noteBox.querySelector("button")) noteBox.textContent = note;
  }
}

function renderCards(status) {
  const s = status.summary;
  setCard("tenants", s.tenants, "", s.readers_down + (s.readers_down === 1 ? " reader" : " readers") + " down");
  const checked = status.last_check ? Math.round(s.consistent_percent) + "%" : "–";
  setCard("consistent", checked, s.inconsistent > 0 ? "warn" : "good",
    status.last_check ? s.consistent + " of " + s.tenants + ", checked " + ago(status.last_check.at) : "no check yet");
  setCard("lagging", s.lagging, s.lagging > 0 ? "warn" : "good", "");
  setCard("unreachable", s.unreachable, s.unreachable > 0 ? "bad" : "good", "");
  setCard("paused", s.paused, s.paused > 0 ? "warn" : "", "");
  const waiting = status.dead_letters_waiting;
  setCard("dead_letters", waiting === null ? "?" : waiting, waiting > 0 ? "bad" : "good");
  const kafka = status.kafka;
  setCard("kafka", kafka.reachable ? "up" : "down", kafka.reachable ? "good" : "bad",
    "lag " + kafka.consumer_lag.total + " · in " + status.events_per_second.in.toFixed(1) + "/s · out " + status.events_per_second.out.toFixed(1) + "/s");
  $("version").textContent = "v" + status.version;
  $("uptime").textContent = "up " + duration(status.uptime_seconds);
  $("roles").textContent = "roles: " + (status.roles.join(", ") || "none");
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function sortValue(tenant, key) {
  switch (key) {
    case "id": return isNaN(Number(tenant.id)) ? tenant.id : Number(tenant.id);
    case "slug": return tenant.slug;
    case "database": return tenant.database.name;
    case "direction": return tenant.direction;
    case "reader": return tenant.reader.state;
    case "lag": return tenant.reader.slot_lag_bytes;
    case "applier": return tenant.applier_state;
    case "to_landlord": return tenant.last_synced.to_landlord || "";
    case "to_tenant": return tenant.last_synced.to_tenant || "";
    case "present": return tenant.check ? String(tenant.check.tenant_present) + String(tenant.check.landlord_present) : "";
    case "check": return tenant.check ? tenant.check.state : "";
    case "error": return tenant.last_error || "";
    default: return "";
  }
}

function presence(value) {
  if (value === true) return "yes";
  if (value === false) return "no";
  return "?";
}

function directionCell(tenant) {
  const cell = el("td", { data: { field: "direction" } }, tenant.direction);
  if (tenant.direction_override) cell.append(el("span", { class: "override", title: "set per tenant (or for all tenants)" }, "override"));
  return cell;
}

function actionsCell(tenant) {
  const select = el("select", { "aria-label": "direction of tenant " + tenant.id, data: { role: "direction" } });
  const chosen = state.chosen.get(tenant.id) || tenant.direction;
  for (const direction of DIRECTIONS) {
    const option = el("option", { value: direction }, direction);
    if (direction === chosen) option.selected = true;
    select.append(option);
  }
  select.addEventListener("change", () => state.chosen.set(tenant.id, select.value));
  const set = el("button", { type: "button", class: "small", data: { action: "direction" } }, "Set");
  set.addEventListener("click", () => {
    state.chosen.delete(tenant.id);
    act("direction of " + tenant.slug, "POST", "/tenants/" + encodeURIComponent(tenant.id) + "/direction", select.value);
  });
  const check = el("button", { type: "button", class: "small secondary", data: { action: "check" }, title: "compare both sides now" }, "Check");
  check.addEventListener("click", () => act("check of " + tenant.slug, "POST", "/tenants/" + encodeURIComponent(tenant.id) + "/check"));
  const repair = el("button", { type: "button", class: "small secondary", data: { action: "repair" }, title: "compare and repair (newest wins)" }, "Repair");
  repair.addEventListener("click", () => act("repair of " + tenant.slug, "POST", "/tenants/" + encodeURIComponent(tenant.id) + "/repair"));
  return el("td", { class: "actions" }, select, " ", set, " ", check, " ", repair);
}

function row(tenant) {
  const db = tenant.database;
  const check = tenant.check;
  const lag = tenant.reader.state === "streaming"
    ? bytes(tenant.reader.slot_lag_bytes) + " · " + tenant.reader.slot_lag_seconds.toFixed(1) + " s"
    : "–";
  return el("tr", { data: { tenant: tenant.id } },
    el("td", { data: { field: "id" } }, tenant.id),
    el("td", { data: { field: "slug" } }, tenant.slug),
    el("td", { class: "db", data: { field: "database" }, title: db.host + ":" + (db.port ?? "") + "/" + db.name },
      el("span", { class: "server" }, db.host + ":" + (db.port ?? "") + "/"), el("br"), db.name),
    directionCell(tenant),
    el("td", { data: { field: "reader" } }, pill(tenant.reader.state, READER_TONE[tenant.reader.state] || "off")),
    el("td", { data: { field: "lag" }, class: tenant.lagging ? "error" : "" }, lag),
    el("td", { data: { field: "applier" } }, pill(tenant.applier_state, APPLIER_TONE[tenant.applier_state] || "off")),
    el("td", { data: { field: "to_landlord" }, title: tenant.last_synced.to_landlord || "" }, ago(tenant.last_synced.to_landlord)),
    el("td", { data: { field: "to_tenant" }, title: tenant.last_synced.to_tenant || "" }, ago(tenant.last_synced.to_tenant)),
    el("td", { data: { field: "present" } }, check ? presence(check.tenant_present) + " / " + presence(check.landlord_present) : "–"),
    el("td", { data: { field: "check" }, title: check ? "checked " + ago(check.at) : "" },
      check ? pill(check.state, CHECK_TONE[check.state] || "bad") : "–"),
    actionsCell(tenant),
    el("td", { class: "error", data: { field: "error" }, title: tenant.last_error || "" }, shorten(tenant.last_error || "", 90)));
}

function renderTable(status) {
  const { key, descending } = state.sort;
  const tenants = status.tenants.slice().sort((a, b) => {
    const x = sortValue(a, key), y = sortValue(b, key);
    const order = x < y ? -1 : x > y ? 1 : 0;
    return descending ? -order : order;
  });
  $("rows").replaceChildren(...tenants.map(row));
  $("matching").textContent = status.matching + " of " + status.summary.tenants + " tenants";
  $("page").textContent = "page " + status.page + " / " + status.pages;
  $("page-prev").disabled = status.page <= 1;
  $("page-next").disabled = status.page >= status.pages;
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.classList.toggle("sorted-asc", th.dataset.sort === key && !descending);
    th.classList.toggle("sorted-desc", th.dataset.sort === key && descending);
  }
}

const COLORS = ["#2b6cb0", "#38a169", "#d69e2e", "#c53030"];

// A small line plot of `series` ([{label, values}]) against `times`.
function plot(canvasId, legendId, times, series, format) {
  const canvas = $(canvasId);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const left = 44, right = 6, top = 6, bottom = 16;
  const values = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const highest = Math.max(0, ...values);
  const max = highest > 0 ? highest * 1.15 : 1;
  const now = Date.now() / 1000;
  const start = now - 3600;
  const x = (t) => left + ((t - start) / 3600) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  g.font = "10px system-ui, sans-serif";
  g.fillStyle = "#66768a";
  g.strokeStyle = "#e2e8f0";
  g.lineWidth = 1;
  for (let i = 0; i <= 2; i += 1) {
    const v = (max / 1.15) * (i / 2);
    g.beginPath();
    g.moveTo(left, y(v));
    g.lineTo(width - right, y(v));
    g.stroke();
    g.fillText(format(v), 2, y(v) + 3);
  }
  for (const [label, t, align] of [["-60 min", start, "left"], ["-30", now - 1800, "center"], ["now", now, "right"]]) {
    g.textAlign = align;
    g.fillText(label, x(t), height - 3);
  }
  g.textAlign = "left";
  const legend = $(legendId);
  legend.replaceChildren();
  series.forEach((s, index) => {
    const color = COLORS[index % COLORS.length];
    const swatch = el("i");
    swatch.style.background = color;
    legend.append(el("span", {}, swatch, s.label));
    g.strokeStyle = color;
    g.fillStyle = color;
    g.lineWidth = 1.5;
    g.beginPath();
    let drawing = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { drawing = false; return; }
      if (drawing) g.lineTo(x(times[i]), y(v));
      else g.moveTo(x(times[i]), y(v));
      drawing = true;
    });
    g.stroke();
    const last = s.values.length - 1;
    if (last >= 0 && s.values[last] !== null) {
      g.beginPath();
      g.arc(x(times[last]), y(s.values[last]), 2.5, 0, 2 * Math.PI);
      g.fill();
    }
  });
}

function number(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return v >= 10 ? v.toFixed(0) : v.toFixed(1);
}

function seconds(v) {
  return v >= 10 ? v.toFixed(0) + "s" : v.toFixed(2) + "s";
}

function renderPlots(history) {
  const points = history.points;
  const times = points.map((p) => p.t);
  const pick = (key) => points.map((p) => p[key]);
  plot("plot-events", "legend-events", times, [
    { label: "into Kafka", values: pick("events_in") },
    { label: "→ landlord", values: pick("to_landlord") },
    { label: "→ tenants", values: pick("to_tenant") },
  ], number);
  plot("plot-replication", "legend-replication", times, [{ label: "lag", values: pick("replication_lag_seconds") }], seconds);
  plot("plot-consumer", "legend-consumer", times, [{ label: "messages", values: pick("consumer_lag") }], number);
  plot("plot-latency", "legend-latency", times, [
    { label: "p50", values: pick("latency_p50") },
    { label: "p99", values: pick("latency_p99") },
  ], seconds);
}

function statusPath() {
  const query = new URLSearchParams({ page: state.page, limit: PAGE_SIZE });
  const text = $("filter-text").value.trim();
  const chosenState = $("filter-state").value;
  if (text) query.set("q", text);
  if (chosenState) query.set("state", chosenState);
  return "/status?" + query;
}

let refreshing = false;

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const [status, history] = await Promise.all([request("GET", statusPath()), request("GET", "/status/history")]);
    if (!status.ok) {
      showMessage("/status answered " + status.status + ": " + status.text.trim(), true);
      if (status.status === 401) askForToken();
      return;
    }
    state.status = JSON.parse(status.text);
    renderCards(state.status);
    renderTable(state.status);
    if (history.ok) {
      state.history = JSON.parse(history.text);
      renderPlots(state.history);
    }
    document.body.dataset.loaded = "true";
  } catch (error) {
    showMessage("refresh failed: " + error, true);
  } finally {
    refreshing = false;
  }
}

function setUp() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value);
    $("token-input").value = "";
    $("token-form").classList.add("hidden");
    updateTokenButton();
    const pending = state.pendingAction;
    state.pendingAction = null;
    if (pending) pending();
    else refresh();
  });
  $("token-cancel").addEventListener("click", () => {
    state.pendingAction = null;
    $("token-form").classList.add("hidden");
  });
  $("token-button").addEventListener("click", () => {
    if (token()) {
      sessionStorage.removeItem(TOKEN_KEY);
      updateTokenButton();
      showMessage("token forgotten", false);
    } else {
      askForToken();
    }
  });
  $("redrive").addEventListener("click", () => act("redrive", "POST", "/dead-letters/redrive"));
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sort = { key, descending: state.sort.key === key ? !state.sort.descending : false };
      if (state.status) renderTable(state.status);
    });
  }
  let typing;
  $("filter-text").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.page = 1; refresh(); }, 250);
  });
  $("filter-state").addEventListener("change", () => { state.page = 1; refresh(); });
  $("page-prev").addEventListener("click", () => { state.page -= 1; refresh(); });
  $("page-next").addEventListener("click", () => { state.page += 1; refresh(); });
  window.addEventListener("resize", () => state.history && renderPlots(state.history));
  updateTokenButton();
  refresh();
  setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", setUp);
