// hypergossip dashboard: polls /dashboard/state every two seconds and redraws.
// Nothing here is fetched from anywhere but this coordinator.
"use strict";

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

function text(id, value) { $(id).textContent = value; }

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function reasons(counts) {
  const parts = Object.entries(counts || {}).sort().map(([k, v]) => `${k} ${v}`);
  return parts.length ? parts.join(", ") : "-";
}

function fmt(v) {
  if (v === null || v === undefined) return "-";
  return Math.abs(v) >= 100 ? v.toFixed(2) : v.toPrecision(4);
}

function ago(s) {
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function drawCurve(rounds) {
  const svg = $("curve");
  const pts = rounds.filter((r) => r.status === "published" && r.value !== null);
  const metric = pts.length ? pts[pts.length - 1].metric : null;
  text("curve-title", metric ? `${metric} over rounds` : "metric over rounds");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const ns = "http://www.w3.org/2000/svg";
  const add = (name, attrs, content) => {
    const el = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (content !== undefined) el.textContent = content;
    svg.appendChild(el);
    return el;
  };
  const series = pts.filter((r) => r.metric === metric);
  if (!series.length) {
    add("text", { x: 20, y: 110, fill: "#6b6b66" }, "no published round yet");
    return;
  }
  const W = 800, H = 220, L = 60, R = 10, T = 14, B = 26;
  const xs = series.map((r) => r.round), ys = series.map((r) => r.value);
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const Y = (y) => H - B - (y - lo) / (hi - lo) * (H - T - B);
  for (const y of [lo, (lo + hi) / 2, hi]) {
    add("line", { x1: L, x2: W - R, y1: Y(y), y2: Y(y), stroke: "#e2e2dc" });
    add("text", { x: 4, y: Y(y) + 4, "font-size": 11, fill: "#6b6b66" }, fmt(y));
  }
  add("text", { x: L, y: H - 6, "font-size": 11, fill: "#6b6b66" }, `round ${x0}`);
  add("text", { x: W - R - 70, y: H - 6, "font-size": 11, fill: "#6b6b66" }, `round ${x1}`);
  add("polyline", { fill: "none", stroke: "#2f6fde", "stroke-width": 2,
    points: series.map((r) => `${X(r.round)},${Y(r.value)}`).join(" ") });
  for (const r of series) {
    add("circle", { cx: X(r.round), cy: Y(r.value), r: 3, fill: "#2f6fde",
      "data-round": r.round });
  }
}

function render(s) {
  text("workload", s.coordinator.workload);
  text("peer-id", s.coordinator.peer_id);
  text("updated", `updated ${new Date(s.at * 1000).toLocaleTimeString()}`);
  const c = s.current;
  text("round-now", c ? `#${c.round}` : "-");
  text("round-detail", c ? `${c.mode || ""} ${c.phase || ""}: ${c.accepted} of ` +
    `${c.participants} in, ${c.seconds_left.toFixed(0)} s left` : "idle, waiting for peers");
  const last = s.rounds.length ? s.rounds[s.rounds.length - 1] : null;
  text("last-round", last ? `#${last.round} ${last.status}` : "-");
  text("last-detail", last ? `accepted ${last.accepted}, dropped ${last.dropped}` +
    (last.value !== null ? `, ${last.metric} ${fmt(last.value)}` : "") : "-");
  text("peers-count", `${s.peers.connected} / ${s.peers.admitted}`);
  text("uptime", `up ${(s.coordinator.uptime_s / 60).toFixed(1)} min`);
  if (s.dp) {
    text("dp", `ε ${fmt(s.dp.cumulative_epsilon)}`);
    text("dp-detail", `${s.dp.rounds_so_far} DP rounds, δ ${s.dp.delta}`);
  }
  drawCurve(s.rounds);
  const rb = $("rounds").tBodies[0];
  rb.replaceChildren();
  for (const r of s.rounds.slice(-15).reverse()) {
    const row = rb.insertRow();
    row.dataset.round = r.round;
    cell(row, r.round);
    cell(row, r.status, r.status);
    cell(row, r.accepted);
    cell(row, r.dropped);
    cell(row, reasons(r.rejected));
    cell(row, r.seconds === null ? "-" : r.seconds.toFixed(1));
    cell(row, r.value === null ? "-" : `${r.metric} ${fmt(r.value)}`);
  }
  const pb = $("peers").tBodies[0];
  pb.replaceChildren();
  for (const p of s.peers.shown) {
    const row = pb.insertRow();
    cell(row, p.peer_id.slice(0, 8) + "…" + p.peer_id.slice(-6), "mono");
    cell(row, p.connected ? "yes" : "no");
    cell(row, ago(p.last_seen_s));
    cell(row, p.reputation === null ? "-" : p.reputation.toFixed(2));
    cell(row, reasons(p.rejected));
  }
  text("rejected", reasons(s.rejected_total));
  if (s.prompt) {
    $("prompt-box").hidden = false;
    const pr = s.prompt.progress;
    text("prompt", `running job ${s.prompt.current_job_number ?? "-"}, ` +
      `${s.prompt.queue_length} queued` + (pr ? `; generation ${pr.generations ?? "-"}, ` +
      `best ${fmt(pr.score ?? null)}, ${pr.llm_calls ?? 0} LLM calls` : ""));
  }
}

async function poll() {
  try {
    const resp = await fetch("/dashboard/state", { cache: "no-store" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    render(await resp.json());
  } catch (err) {
    text("updated", `cannot reach the coordinator (${err.message}); retrying`);
  }
  setTimeout(poll, POLL_MS);
}

poll();
