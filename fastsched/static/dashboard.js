// The fastsched dashboard: polls /status.json and /history.json on its own server and draws
// plain SVG charts. No library, no other origin (the server's Content-Security-Policy forbids it).
// With the HTTP token its buttons act (POST /actions/<name>, fastsched/http_actions.py): each
// asks for confirmation first, with the count of a dry run for a filter, and says what changed.
"use strict";

const PRIORITIES = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "NEGLIGIBLE"];
const COLORS = { CRITICAL: "#d62728", HIGH: "#ff7f0e", MEDIUM: "#1f77b4", LOW: "#2ca02c", NEGLIGIBLE: "#7f7f7f" };
const STATUS_EVERY = 2000; // ms between /status.json polls
const HISTORY_EVERY = 4000; // ms between /history.json polls
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "-";
  if (value < 1) return Math.round(value * 1000) + " ms";
  if (value < 60) return value.toFixed(1) + " s";
  if (value < 3600) return Math.floor(value / 60) + " min " + Math.floor(value % 60) + " s";
  return Math.floor(value / 3600) + " h " + Math.floor((value % 3600) / 60) + " min";
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function viewBox(svg) {
  const box = svg.getAttribute("viewBox").split(" ").map(Number);
  return { width: box[2], height: box[3] };
}

// A line chart of series [{name, points: [[t, value], ...]}] over time t (epoch seconds).
function lineChart(svg, series, unit) {
  const { width, height } = viewBox(svg);
  const left = 48, right = 12, top = 10, bottom = 24;
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points);
  svg.setAttribute("data-samples", String(all.length ? Math.max(...series.map((s) => s.points.length)) : 0));
  if (all.length === 0 || Math.max(...series.map((s) => s.points.length)) < 2) {
    svg.appendChild(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" },
      "collecting samples…"));
    return;
  }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const yMax = niceMax(Math.max(...all.map((p) => p[1])));
  const x = (t) => left + ((t - t0) / Math.max(t1 - t0, 1e-9)) * (width - left - right);
  const y = (v) => top + (1 - v / yMax) * (height - top - bottom);
  for (const fraction of [0, 0.5, 1]) {
    const value = yMax * fraction;
    svg.appendChild(svgEl("line", { class: "axis", x1: left, x2: width - right, y1: y(value), y2: y(value) }));
    const label = Number.isInteger(value) ? String(value) : value.toFixed(1);
    svg.appendChild(svgEl("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" }, label + unit));
  }
  const span = t1 - t0;
  svg.appendChild(svgEl("text", { x: left, y: height - 6 }, "-" + seconds(span)));
  svg.appendChild(svgEl("text", { x: width - right, y: height - 6, "text-anchor": "end" }, "now"));
  for (const s of series) {
    if (s.points.length < 2) continue;
    const d = s.points.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ");
    const last = s.points[s.points.length - 1][1];
    svg.appendChild(svgEl("path", {
      class: "series", d: d, stroke: COLORS[s.name] || "#333", "data-priority": s.name,
      "data-points": s.points.length, "data-last": last, "data-max": Math.max(...s.points.map((p) => p[1])),
    }));
  }
}

// Horizontal bars: workers running per priority, with the quadratic limit as a marker.
function shareChart(svg, status) {
  const { width } = viewBox(svg);
  const left = 96, right = 150, rowHeight = 36, top = 8;
  svg.replaceChildren();
  const rows = status.priorities;
  const scale = Math.max(1, status.scheduler.active_workers,
    ...rows.map((p) => Math.max(p.workers, p.limit || 0)));
  const x = (v) => left + (v / scale) * (width - left - right);
  rows.forEach((p, i) => {
    const y = top + i * rowHeight;
    svg.appendChild(svgEl("text", { x: left - 8, y: y + 18, "text-anchor": "end" }, p.name));
    svg.appendChild(svgEl("rect", { class: "axis", x: left, y: y + 6, width: width - left - right, height: 16,
      fill: "none" }));
    svg.appendChild(svgEl("rect", {
      class: "bar", x: left, y: y + 6, width: Math.max(0, x(p.workers) - left), height: 16,
      fill: COLORS[p.name], "data-priority": p.name, "data-workers": p.workers,
    }));
    if (p.limit !== null) {
      svg.appendChild(svgEl("line", {
        class: "limit", x1: x(p.limit), x2: x(p.limit), y1: y + 2, y2: y + 26, stroke: "#1d2430",
        "stroke-width": 2, "stroke-dasharray": "3 2", "data-priority": p.name, "data-limit": p.limit,
      }));
    }
    const share = p.share === null ? "not in play" : p.workers + " of limit " + p.limit + " (share " +
      Math.round(p.share * 100) + "%)";
    svg.appendChild(svgEl("text", { x: width - right + 8, y: y + 18 }, share));
  });
}

function cards(status) {
  const t = status.totals, jpm = status.jobs_per_minute;
  const items = [
    ["waiting", t.waiting], ["deferred", t.deferred], ["running", t.running], ["failed", t.failed],
    ["done in the last hour", t.done_last_hour], ["jobs/min (1 min)", jpm["1"]], ["jobs/min (3 min)", jpm["3"]],
    ["jobs/min (5 min)", jpm["5"]], ["active workers", status.scheduler.active_workers],
  ];
  const box = document.getElementById("totals");
  box.replaceChildren(...items.map(([label, value]) => {
    const card = el("div", { class: "card", "data-key": label });
    card.append(el("div", { class: "value" }, String(value)), el("div", { class: "label" }, label));
    return card;
  }));
}

function priorityTable(status) {
  const body = document.querySelector("#priorities tbody");
  body.replaceChildren(...status.priorities.map((p) => {
    const row = el("tr", { "data-priority": p.name, "data-paused": String(Boolean(p.paused)) });
    const cells = [p.priority + " " + p.name + (p.paused ? " (paused)" : "") +
      (p.paused_jobs ? " (+" + p.paused_jobs + " paused)" : ""), p.waiting, p.deferred, p.running, p.failed, p.done_last_hour,
      seconds(p.oldest_wait_seconds), p.workers, p.limit === null ? "-" : p.limit];
    for (const cell of cells) row.appendChild(el("td", {}, String(cell)));
    return row;
  }));
}

function hosts(status) {
  const box = document.getElementById("hosts");
  if (!status.hosts.length) {
    box.replaceChildren(el("p", { class: "muted" }, "No pool master is registered."));
    return;
  }
  box.replaceChildren(...status.hosts.map((host) => {
    const div = el("div", { class: "host" });
    div.appendChild(el("strong", {}, host.host));
    const list = el("ul");
    for (const m of host.masters) {
      const item = el("li", { class: "master", "data-pid": m.pid });
      item.append(
        "master " + m.pid + ": " + m.workers + " workers on " +
          ((m.queues && m.queues.length) ? "queues " + m.queues.join(", ") : "every queue") + ", heartbeat " + seconds(m.heartbeat_age_seconds) + " ago ",
        el("span", { class: m.alive ? "muted" : "dead" }, m.alive ? "alive" : "DEAD"),
        "; children " + (m.children.map((c) => c.pid + " (" + seconds(c.heartbeat_age_seconds) + ")").join(", ") || "none"));
      list.appendChild(item);
    }
    div.appendChild(list);
    return div;
  }));
}

function queueTable(status) {
  const body = document.querySelector("#queues tbody");
  const queues = status.queues || [];
  if (!queues.length) {
    const row = el("tr");
    row.appendChild(el("td", { colspan: "6", class: "muted" }, "No queue holds a job."));
    body.replaceChildren(row);
    return;
  }
  const masters = status.hosts.flatMap((host) => host.masters.filter((m) => m.alive)
    .map((m) => ({ name: host.host + " " + m.pid, queues: m.queues || [] })));
  body.replaceChildren(...queues.map((q) => {
    const row = el("tr", { "data-queue": q.queue });
    const serving = masters.filter((m) => !m.queues.length || m.queues.includes(q.queue)).length;
    for (const cell of [q.queue, q.waiting, q.deferred, q.running, q.failed, serving]) {
      row.appendChild(el("td", {}, String(cell)));
    }
    return row;
  }));
}

function failedTable(status) {
  const body = document.querySelector("#failed tbody");
  if (!status.failed_recent.length) {
    const row = el("tr");
    row.appendChild(el("td", { colspan: "7", class: "muted" }, "No failed jobs."));
    body.replaceChildren(row);
    return;
  }
  body.replaceChildren(...status.failed_recent.map((job) => {
    const row = el("tr", { class: "failed-job", "data-id": job.id });
    for (const cell of ["#" + job.id, job.command, job.name, job.finished || "-",
      job.retrial + " retries, " + job.crashes + " crashes"]) {
      row.appendChild(el("td", {}, String(cell)));
    }
    const error = el("td", { class: "error" });
    const details = el("details");
    details.append(el("summary", {}, job.error_summary || "(no error recorded)"), el("pre", {}, job.error));
    error.appendChild(details);
    row.appendChild(error);
    const act = el("td", { class: "act" });
    act.append(
      el("button", { type: "button", class: "act", "data-action": "retry-job", "data-id": job.id }, "retry"),
      el("button", { type: "button", class: "act", "data-action": "cancel-job", "data-id": job.id }, "cancel"));
    row.appendChild(act);
    return row;
  }));
}

function legend(id) {
  const box = document.querySelector('.legend[data-for="' + id + '"]');
  if (box.childElementCount) return;
  for (const name of PRIORITIES) {
    const item = el("span");
    item.append(el("span", { class: "swatch p-" + name }), name);
    box.appendChild(item);
  }
}

function renderStatus(status) {
  document.getElementById("database").textContent = status.database;
  document.getElementById("updated").textContent = "as of " + status.generated_at;
  cards(status);
  priorityTable(status);
  hosts(status);
  queueTable(status);
  failedTable(status);
  pausesList(status);
  historyTable(status);
  enableActions();
  shareChart(document.getElementById("chart-share"), status);
  const s = status.scheduler;
  document.getElementById("scheduler").textContent = s.running_workers + " of " + s.active_workers +
    " active workers busy; " + s.priorities_in_play +
    (s.priorities_in_play === 1 ? " priority" : " priorities") + " in play; the next free worker goes to " +
    (s.next_priority || "nobody (nothing claimable waits)") + ".";
}

function renderHistory(history) {
  const samples = history.samples;
  const depth = PRIORITIES.map((name, rank) => ({ name, points: samples.map((s) => [s.t, s.waiting[rank]]) }));
  lineChart(document.getElementById("chart-depth"), depth, "");
  const throughput = PRIORITIES.map((name, rank) => {
    const points = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1], b = samples[i];
      if (!a.done || !b.done || b.t <= a.t) continue;
      points.push([b.t, Math.max(0, (b.done[rank] - a.done[rank]) / (b.t - a.t))]);
    }
    return { name, points };
  });
  lineChart(document.getElementById("chart-throughput"), throughput, "/s");
  legend("chart-depth");
  legend("chart-throughput");
}

function setConnection(state, text) {
  const badge = document.getElementById("connection");
  badge.setAttribute("data-state", state);
  badge.textContent = text;
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || url + ": HTTP " + response.status);
  return body;
}

async function pollStatus() {
  await refreshStatus();
  setTimeout(pollStatus, STATUS_EVERY);
}

async function pollHistory() {
  try {
    renderHistory(await getJSON("/history.json"));
  } catch (error) {
    setConnection("error", String(error.message || error));
  }
  setTimeout(pollHistory, HISTORY_EVERY);
}

// --- actions: with the HTTP token only (the server refuses them otherwise) --------------------

let actionsEnabled = false;

function enableActions() {
  for (const button of document.querySelectorAll("button.act")) button.disabled = !actionsEnabled;
}

function pausesList(status) {
  const box = document.getElementById("pauses");
  if (!status.paused.length) {
    box.replaceChildren(el("p", { class: "muted" }, "Nothing is paused."));
    return;
  }
  box.replaceChildren(...status.paused.map((pause) => {
    const parts = ["priority", "command", "queue"].filter((key) => pause[key] !== null);
    const row = el("p", { class: "paused-rule", "data-pause": parts.map((key) => key + "=" + pause[key]).join(",") });
    const button = el("button", { type: "button", class: "act", "data-action": "resume" }, "resume");
    for (const key of parts) button.setAttribute("data-" + key, pause[key]);
    row.append(el("span", { class: "paused-badge" }, "PAUSED "), parts.map((key) => key + " " + pause[key]).join(", ") +
      " — by " + pause.paused_by + " at " + pause.paused_at + " ", button);
    return row;
  }));
}

function historyTable(status) {
  const body = document.querySelector("#history tbody");
  if (!status.actions_recent.length) {
    const row = el("tr");
    row.appendChild(el("td", { colspan: "5", class: "muted" }, "No action yet."));
    body.replaceChildren(row);
    return;
  }
  body.replaceChildren(...status.actions_recent.map((action) => {
    const row = el("tr", { class: "action", "data-action": action.action, "data-jobs": action.jobs });
    for (const cell of [action.at, action.by, action.action, action.target, action.jobs]) {
      row.appendChild(el("td", {}, String(cell)));
    }
    return row;
  }));
}

function filterFromForm() {
  const value = (id) => document.getElementById(id).value.trim();
  const olderThan = value("f-older-than");
  return {
    command: value("f-command") || null, priority: value("f-priority") || null, queue: value("f-queue") || null,
    error: value("f-error") || null, older_than: olderThan === "" ? null : Number(olderThan),
  };
}

function describeFilter(filter) {
  const parts = Object.entries(filter).filter(([, v]) => v !== null).map(([k, v]) => k.replace("_", " ") + " " + v);
  return parts.length ? parts.join(", ") : "no filter: every job";
}

async function postAction(name, body) {
  const response = await fetch("/actions/" + name, {
    method: "POST", cache: "no-store", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({ error: "HTTP " + response.status }));
  if (!response.ok) throw new Error(answer.error || "HTTP " + response.status);
  return answer;
}

// What a button asks the server to do: [action, body, whether a dry run tells the count first].
function requestOf(button) {
  const kind = button.getAttribute("data-action");
  const filter = filterFromForm();
  if (kind === "retry-job" || kind === "cancel-job") {
    return [kind.split("-")[0], { id: Number(button.getAttribute("data-id")) }, false,
      (kind === "retry-job" ? "Retry" : "Cancel (delete)") + " failed job #" + button.getAttribute("data-id") + "?"];
  }
  if (kind === "pause") {
    const parts = { priority: filter.priority, command: filter.command, queue: filter.queue };
    return ["pause", parts, false, "Pause " + describeFilter(parts) + "? No master claims that work until it is " +
      "resumed; running jobs go on."];
  }
  if (kind === "resume") {
    const parts = {};
    for (const key of ["priority", "command", "queue"]) parts[key] = button.getAttribute("data-" + key);
    return ["resume", parts, false, "Resume " + describeFilter(parts) + "?"];
  }
  const body = { filter, failed_only: kind === "cancel-failed-filter" };
  return [kind === "retry-filter" ? "retry" : "cancel", body, true, null];
}

function showResult(state, text) {
  const result = document.getElementById("action-result");
  result.setAttribute("data-state", state);
  result.textContent = text;
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const yes = document.getElementById("confirm-yes"), no = document.getElementById("confirm-no");
    const done = (answer) => {
      yes.onclick = no.onclick = null;
      dialog.close();
      resolve(answer);
    };
    yes.onclick = () => done(true);
    no.onclick = () => done(false);
    dialog.showModal();
  });
}

async function act(button) {
  const [name, body, dryRunFirst, question] = requestOf(button);
  try {
    let text = question;
    if (dryRunFirst) {
      const preview = await postAction(name, { ...body, dry_run: true });
      if (!preview.total) {
        showResult("ok", "Nothing to do: " + preview.message + ".");
        return;
      }
      text = (name === "retry" ? "Retry " : "Cancel ") + preview.message.replace(/ would be .*$/, "") + "?";
    }
    if (!(await confirmAction(text))) {
      showResult("ok", "Nothing was changed.");
      return;
    }
    const answer = await postAction(name, body);
    showResult("ok", "Done: " + answer.message + ".");
  } catch (error) {
    showResult("error", "Refused: " + String(error.message || error));
  }
  refreshStatus();
}

async function checkActions() {
  const mode = document.getElementById("controls-mode");
  try {
    const info = await getJSON("/actions.json");
    actionsEnabled = Boolean(info.enabled);
    mode.textContent = actionsEnabled ? "each action asks for confirmation first" : "read-only: " + info.reason;
  } catch (error) {
    actionsEnabled = false;
    mode.textContent = "read-only: " + String(error.message || error);
  }
  mode.setAttribute("data-enabled", String(actionsEnabled));
  enableActions();
}

async function refreshStatus() {
  try {
    renderStatus(await getJSON("/status.json"));
    setConnection("live", "live");
  } catch (error) {
    setConnection("error", String(error.message || error));
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.act");
  if (button && !button.disabled) act(button);
});

document.addEventListener("DOMContentLoaded", () => {
  checkActions();
  pollStatus();
  pollHistory();
});
