// migrate-agent dashboard: logs in with a token, then draws the host's migrations from the agent's event stream
// (/api/events: the whole state again whenever it changed). No framework, no CDN: DOM and SVG by hand.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const PHASE_COLORS = {
  preflight: "#9ca3af", begin: "#6b7280", precopy: "#2563eb", dump: "#dc2626", finalround: "#ea580c",
  transfer: "#f59e0b", restore: "#7c3aed", commit: "#059669", receiving: "#2563eb", restoring: "#7c3aed",
  restored: "#a855f7", committed: "#059669", "lazy fill": "#10b981",
};

let selected = null;
let events = null;
let last = null;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function bytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function ms(v) { return v === undefined || v === null ? "" : Math.round(v) + " ms"; }

function time(t) { return new Date(t).toLocaleTimeString(); }

async function login(token) {
  const r = await fetch("/api/login", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
    credentials: "same-origin",
  });
  if (!r.ok) throw new Error(r.status === 401 ? "wrong token" : "login failed: " + r.status);
  return r.json();
}

function showLogin(message) {
  $("board").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
}

function connect() {
  if (events) events.close();
  events = new EventSource("/api/events");
  events.onmessage = (m) => render(JSON.parse(m.data));
  events.onerror = async () => {
    // A closed stream: logged out (401), or the agent restarted. Ask which.
    const r = await fetch("/api/state", { credentials: "same-origin" });
    if (r.status === 401) { events.close(); showLogin("session ended: log in again"); }
  };
}

function render(state) {
  last = state;
  $("login").hidden = true;
  $("board").hidden = false;
  $("logout").hidden = false;
  $("host").textContent = state.host + " (" + state.version + ")";
  $("updated").textContent = "updated " + time(state.at);
  const body = document.querySelector("#migrations tbody");
  body.replaceChildren();
  $("empty").hidden = state.migrations.length > 0;
  if (!selected || !state.migrations.some((m) => m.id === selected)) {
    const running = state.migrations.find((m) => !m.finished);
    selected = (running || state.migrations[0] || {}).id || null;
  }
  for (const m of state.migrations) {
    const tr = el("tr", { "data-id": m.id, "data-finished": String(m.finished), class: m.id === selected ? "selected" : "" });
    tr.append(el("td", {}, time(m.startedAt)), el("td", {}, m.id), el("td", {}, m.direction), el("td", {}, m.peer),
      el("td", {}, m.mode), el("td", { class: "state state-" + m.state }, m.state), el("td", {}, ms(m.downtimeMs)),
      el("td", {}, bytes(m.bytesSent)));
    tr.onclick = () => { selected = m.id; render(last); };
    body.append(tr);
  }
  const m = state.migrations.find((x) => x.id === selected);
  $("detail").hidden = !m;
  if (m) detail(m);
}

function detail(m) {
  $("detail-title").textContent = (m.direction === "outgoing" ? "to " : "from ") + m.peer + ": " + m.id + " (" + m.state + ")";
  const failure = $("failure");
  failure.hidden = !m.error;
  failure.textContent = m.error ? "Failed" + (m.failedPhase ? " in " + m.failedPhase : "") + ": " + m.error +
    (m.workload ? " — workload: " + m.workload : "") : "";
  const numbers = $("numbers");
  numbers.replaceChildren();
  const rows = [["pid", m.pid || ""], ["mode", m.mode], ["workload", m.workload || "—"], ["downtime", ms(m.downtimeMs) || "—"],
    ["moved", bytes(m.bytesSent) || "—"], ["pages", m.pagesMoved === undefined ? "—" : String(m.pagesMoved)],
    ["iterations", String(m.iterations.length)]];
  for (const [k, v] of rows) {
    numbers.append(el("dt", {}, k), el("dd", { id: "n-" + k }, v));
  }
  timeline(m);
  iterations(m);
  const lazy = $("lazy");
  lazy.hidden = !m.lazyFill;
  if (m.lazyFill) {
    const f = m.lazyFill;
    const share = f.total > 0 ? f.filled / f.total : (f.state === "filled" ? 1 : 0);
    $("lazy-bar").style.width = Math.round(share * 100) + "%";
    $("lazy-text").textContent = f.state + (f.total > 0 ? " " + f.filled + " / " + f.total + " pages" : "");
    lazy.dataset.state = f.state;
  }
  const notes = $("notes");
  notes.replaceChildren(...m.notes.map((n) => el("li", {}, n)));
}

function timeline(m) {
  const svg = $("timeline");
  svg.replaceChildren();
  if (m.phases.length === 0) return;
  const width = svg.clientWidth || 900;
  const t0 = Date.parse(m.phases[0].start);
  const now = last ? Date.parse(last.at) : Date.now();
  const t1 = Math.max(...m.phases.map((p) => (p.end ? Date.parse(p.end) : now)), t0 + 1);
  const x = (t) => ((t - t0) / (t1 - t0)) * (width - 2) + 1;
  for (const p of m.phases) {
    const s = Date.parse(p.start);
    const e = p.end ? Date.parse(p.end) : now;
    const w = Math.max(2, x(e) - x(s));
    const rect = el("svg:rect", { class: "phase", "data-phase": p.name, x: x(s), y: 4, width: w, height: 26,
      fill: PHASE_COLORS[p.name] || "#9ca3af" });
    rect.append(el("svg:title", {}, p.name + ": " + Math.round(e - s) + " ms" + (p.end ? "" : " (running)")));
    svg.append(rect);
    if (w > 40) svg.append(el("svg:text", { x: x(s) + 3, y: 46 }, p.name));
  }
  svg.append(el("svg:text", { x: width - 80, y: 58 }, Math.round(t1 - t0) + " ms"));
}

function iterations(m) {
  const svg = $("iterations");
  svg.replaceChildren();
  const its = m.iterations;
  if (its.length === 0) {
    svg.append(el("svg:text", { x: 4, y: 20 }, m.mode === "cold" ? "cold migration: no pre-copy" : "no iteration yet"));
    return;
  }
  const width = svg.clientWidth || 900;
  const height = 140;
  const max = Math.max(...its.map((i) => Math.max(i.pagesSent, i.dirtyPages)), 1);
  const slot = Math.min(80, (width - 40) / its.length);
  its.forEach((it, k) => {
    const x0 = 30 + k * slot;
    const hs = (it.pagesSent / max) * (height - 20);
    const hd = (it.dirtyPages / max) * (height - 20);
    const sent = el("svg:rect", { class: "bar-sent", "data-iteration": it.number, x: x0, y: height - hs, width: slot * 0.4, height: hs });
    sent.append(el("svg:title", {}, "iteration " + it.number + ": " + it.pagesSent + " pages sent, " +
      it.mibPerSecond.toFixed(0) + " MiB/s, " + Math.round(it.ms) + " ms" + (it.throttlePercent ? ", throttled " + it.throttlePercent + "%" : "")));
    const dirty = el("svg:rect", { class: "bar-dirty", "data-iteration": it.number, x: x0 + slot * 0.42, y: height - hd, width: slot * 0.4, height: hd });
    dirty.append(el("svg:title", {}, "iteration " + it.number + ": " + it.dirtyPages + " pages dirty"));
    svg.append(sent, dirty, el("svg:text", { x: x0, y: height + 14 }, String(it.number)));
  });
  svg.append(el("svg:text", { x: 0, y: 12 }, String(max)));
  const legend = m.direction === "outgoing" ? "blue: pages sent, amber: dirty pages found" : "pages received per round";
  svg.append(el("svg:text", { x: Math.max(30, width - 280), y: 12 }, legend));
}

async function start() {
  $("login-form").onsubmit = async (e) => {
    e.preventDefault();
    try {
      await login($("token").value);
      $("token").value = "";
      connect();
    } catch (err) {
      showLogin(err.message);
    }
  };
  $("logout").onclick = async () => {
    await fetch("/api/logout", { method: "POST", credentials: "same-origin" });
    if (events) events.close();
    showLogin("");
  };
  // A token in the fragment (#token=...: never sent to the server, removed from the address at once) logs in.
  const m = /^#token=(.+)$/.exec(location.hash);
  if (m) {
    history.replaceState(null, "", location.pathname);
    try { await login(decodeURIComponent(m[1])); } catch (err) { showLogin(err.message); return; }
  }
  const r = await fetch("/api/state", { credentials: "same-origin" });
  if (r.status === 401) { showLogin(""); return; }
  render(await r.json());
  connect();
}

document.addEventListener("DOMContentLoaded", start);
