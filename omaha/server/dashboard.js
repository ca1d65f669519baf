// omahad dashboard: charts, instance search and history, and the pause, resume and promote
// buttons. Served by omahad with the page (no build step, no external fetches). Changes go to
// the JSON API with "Authorization: Bearer <token>" and "Content-Type: application/json"; the
// token lives in this tab's sessionStorage only. Reads use the token when there is one, else the
// Basic credentials the browser sent for the page. Data is put in the page with textContent,
// never parsed as HTML.
"use strict";

const tokenKey = "omahad.token";
const svgNS = "http://www.w3.org/2000/svg";
const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const pageSize = 50;

function token() { return sessionStorage.getItem(tokenKey) || ""; }

// api calls the JSON API and returns the decoded answer; it throws an Error carrying the
// server's message (and its body, for a gate's refusal).
async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try { data = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    const err = new Error((data && data.error) || (resp.status + " " + resp.statusText));
    err.status = resp.status;
    err.body = data;
    throw err;
  }
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function when(s) {
  if (!s) return "";
  const d = new Date(s);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function flash(msg, isError) {
  const f = document.getElementById("flash");
  f.textContent = msg;
  f.classList.toggle("error", !!isError);
  f.hidden = false;
}

const enc = encodeURIComponent;

// --- sign in -------------------------------------------------------------------------------

function showLogin() {
  const signed = token() !== "";
  document.getElementById("token").hidden = signed;
  document.getElementById("signin").hidden = signed;
  document.getElementById("signout").hidden = !signed;
  document.getElementById("who").textContent = signed
    ? "Signed in with a token: changes are enabled."
    : "Read-only. Sign in with an admin token to pause, resume or promote.";
  for (const b of document.querySelectorAll("button.act")) b.disabled = !signed;
}

async function signIn(ev) {
  ev.preventDefault();
  const input = document.getElementById("token");
  const t = input.value.trim();
  if (!t) return;
  sessionStorage.setItem(tokenKey, t);
  input.value = "";
  try {
    await api("GET", "/api/v1/apps"); // refuses an unknown token
    flash("Signed in. Changes made here are recorded in the audit log under this token.");
  } catch (e) {
    sessionStorage.removeItem(tokenKey);
    flash("Sign-in failed: " + e.message, true);
  }
  showLogin();
}

function signOut() {
  sessionStorage.removeItem(tokenKey);
  flash("Signed out.");
  showLogin();
}

// --- charts --------------------------------------------------------------------------------

// drawChart draws one group's hosts per version as stacked bars, one per time slot.
function drawChart(cell, gh, hist, colors) {
  const width = 260, height = 64, n = hist.buckets;
  const since = new Date(hist.since).getTime();
  const slots = Array.from({ length: n }, () => []);
  const bucketMS = durationMS(hist.bucket);
  let top = 0;
  for (const p of gh.points) {
    const i = Math.round((new Date(p.at).getTime() - since) / bucketMS);
    if (i >= 0 && i < n) slots[i].push(p);
  }
  for (const s of slots) top = Math.max(top, s.reduce((a, p) => a + p.hosts, 0));
  cell.replaceChildren();
  if (top === 0) {
    cell.append(el("span", { class: "muted" }, since < new Date(hist.counted_from).getTime()
      ? "too many check-ins in this range to count: choose a shorter one" : "no check-ins in this range"));
    return;
  }
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "hosts per version over time" });
  chart.append(svg("rect", { x: 0, y: 0, width, height, fill: "#fbfbfb", stroke: "#ddd" }));
  const w = width / n;
  // Slots before counted_from were not counted (the range holds more check-ins than the
  // server reads for one answer): grey, and said below.
  const uncounted = Math.min(n, Math.max(0, Math.round((new Date(hist.counted_from).getTime() - since) / bucketMS)));
  if (uncounted > 0) {
    chart.append(svg("rect", { x: 0, y: 0, width: (uncounted * w).toFixed(2), height, fill: "#e4e4e4" }));
  }
  slots.forEach((s, i) => {
    let y = height;
    for (const p of s) {
      const h = (p.hosts / top) * (height - 4);
      const r = svg("rect", { x: (i * w).toFixed(2), y: (y - h).toFixed(2), width: Math.max(w - 0.5, 0.5).toFixed(2), height: h.toFixed(2), fill: colors.get(p.version) });
      const title = svg("title");
      title.textContent = `${when(p.at)}: ${p.hosts} host(s) on ${p.version}`;
      r.append(title);
      chart.append(r);
      y -= h;
    }
  });
  const legend = el("div", { class: "legend" });
  const seen = [...new Set(gh.points.map(p => p.version))];
  for (const v of seen) {
    legend.append(el("span", {}, el("i", { class: "swatch-" + palette.indexOf(colors.get(v)) }), v));
  }
  legend.append(el("span", { class: "muted" }, `max ${top} host(s); ${when(hist.since)} → now`));
  if (uncounted > 0) {
    legend.append(el("span", { class: "muted" }, `grey: not counted (too many check-ins before ${when(hist.counted_from)}; choose a shorter range)`));
  }
  cell.append(chart, legend);
}

// durationMS parses the Go durations the API writes ("1h0m0s", "3m30s", "500ms").
function durationMS(s) {
  let total = 0;
  for (const [, num, unit] of String(s).matchAll(/([\d.]+)(ns|us|µs|ms|s|m|h)/g)) {
    total += parseFloat(num) * { ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 }[unit];
  }
  return total;
}

async function loadCharts(section) {
  const app = section.dataset.app;
  const range = section.querySelector("select.history-range").value;
  let hist;
  try {
    hist = await api("GET", `/api/v1/apps/${enc(app)}/history?range=${enc(range)}&buckets=48`);
  } catch (e) {
    for (const cell of section.querySelectorAll("td.chart")) cell.textContent = "chart: " + e.message;
    return;
  }
  const versions = [...new Set(hist.groups.flatMap(g => g.points.map(p => p.version)))].sort(compareVersions);
  const colors = new Map(versions.map((v, i) => [v, palette[i % palette.length]]));
  for (const gh of hist.groups) {
    const row = section.querySelector(`tr.group[data-group="${CSS.escape(gh.group_id)}"]`);
    if (row) drawChart(row.querySelector("td.chart"), gh, hist, colors);
  }
}

function compareVersions(a, b) {
  const pa = a.split("."), pb = b.split(".");
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] || "", y = pb[i] || "";
    const nx = /^\d+$/.test(x), ny = /^\d+$/.test(y);
    if (nx && ny && Number(x) !== Number(y)) return Number(x) - Number(y);
    if (!(nx && ny) && x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

// --- waves ---------------------------------------------------------------------------------

// loadWaves fills each group's waves cell from the status JSON: the group's wave plan
// (policy.waves, e.g. "1%:1h,10%:2h,100%"), office hours, and where the rollout of its
// channel's newest version stands (rollout: wave i of n, its share, when the next opens, or why
// it is held). A group without waves keeps "one wave".
async function loadWaves(section) {
  let st;
  try {
    st = await api("GET", `/api/v1/apps/${enc(section.dataset.app)}/status`);
  } catch (e) {
    return; // the cells keep their text; the page's own numbers are there
  }
  for (const gs of st.groups || []) {
    const row = section.querySelector(`tr.group[data-group="${CSS.escape(gs.group.id)}"]`);
    const p = gs.group.policy || {}, r = gs.rollout;
    if (!row || (!p.waves && !p.office_hours && !r)) continue;
    const cell = row.querySelector("td.waves");
    const lines = [];
    if (r && r.waves > 0) {
      lines.push(el("strong", {}, `wave ${r.wave + 1} of ${r.waves}`), ` (${r.share_percent}% of hosts)` + (r.version ? ` for ${r.version}` : ""));
      if (r.held) lines.push(el("br"), el("span", { class: r.held === "soaking" ? "" : "paused" }, r.held));
      if (r.next_at) lines.push(el("br"), `next wave ${when(r.next_at)}`);
      const bar = svg("svg", { width: 120, height: 8, role: "img", "aria-label": "wave progress" });
      bar.append(svg("rect", { x: 0, y: 0, width: 120, height: 8, fill: "#e4e4e4" }),
        svg("rect", { x: 0, y: 0, width: (1.2 * r.share_percent).toFixed(1), height: 8, fill: "#2ca02c" }));
      lines.push(el("br"), bar);
    }
    if (p.waves) lines.push(el("br"), el("span", { class: "muted" }, `plan ${p.waves}`));
    if (p.office_hours) {
      lines.push(el("br"), el("span", { class: "muted" }, `office hours ${p.office_hours}`));
      if (r) lines.push(" ", el("span", { class: r.office_hours_open ? "enabled" : "paused" }, r.office_hours_open ? "(open now)" : "(closed now)"));
    }
    if (lines[0] && lines[0].tagName === "BR") lines.shift();
    cell.replaceChildren(...lines);
  }
}

// --- actions -------------------------------------------------------------------------------

// ask shows the confirmation dialog and resolves to the reason typed (when force is asked
// for), or null when the operator cancels.
function ask(title, text, opts) {
  opts = opts || {};
  const d = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const gates = document.getElementById("confirm-gates");
  gates.replaceChildren(...(opts.gates || []).map(g => el("li", {}, gateLine(g))));
  gates.hidden = !opts.gates;
  document.getElementById("confirm-force").hidden = !opts.force;
  document.getElementById("confirm-reason").value = "";
  document.getElementById("confirm-error").hidden = true;
  document.getElementById("confirm-ok").textContent = opts.ok || "Confirm";
  return new Promise(resolve => {
    d.addEventListener("close", () => {
      resolve(d.returnValue === "ok" ? document.getElementById("confirm-reason").value.trim() : null);
    }, { once: true });
    d.returnValue = "";
    d.showModal();
  });
}

function gateLine(g) {
  return `${g.passed ? "passes" : "FAILS"}: ${g.text || g.name}`;
}

async function act(button) {
  const section = button.closest("section.app");
  const row = button.closest("tr.group");
  const app = section.dataset.app, group = row.dataset.group, name = row.dataset.name;
  const base = `/api/v1/apps/${enc(app)}`;
  try {
    switch (button.dataset.action) {
    case "pause":
      if (await ask(`Pause group ${name}?`, `Hosts of ${name} get no new update offers until the group is resumed. Updates already offered go on.`, { ok: "Pause" }) === null) return;
      await api("PATCH", `${base}/groups/${enc(group)}`, { enabled: false });
      flash(`Paused group ${name}.`);
      break;
    case "resume":
      if (await ask(`Resume group ${name}?`, `Hosts of ${name} are offered its channel's version again, within its rollout policy. Failures before now no longer count toward its halt threshold.`, { ok: "Resume" }) === null) return;
      await api("PATCH", `${base}/groups/${enc(group)}`, { enabled: true });
      flash(`Resumed group ${name}.`);
      break;
    case "promote": {
      const { version, from, to } = button.dataset;
      if (await ask(`Promote ${version} to ${to}?`, `Channel ${to} will offer ${version}, as ${from} does now, to every group that follows ${to}. Its promotion gate is checked first.`, { ok: "Promote" }) === null) return;
      try {
        await api("POST", `${base}/promote`, { version, from, to });
      } catch (e) {
        if (e.status !== 409 || !e.body || !e.body.gates) throw e;
        const reason = await ask(`The gate of ${to} refuses ${version}`, e.message + " Promote anyway? The override and its reason are recorded.", { gates: e.body.gates, force: true, ok: "Promote anyway" });
        if (reason === null) return;
        if (!reason) throw new Error("an override needs a reason");
        await api("POST", `${base}/promote`, { version, from, to, force: true, reason });
      }
      flash(`Promoted ${version} from ${from} to ${to}.`);
      break;
    }
    }
    setTimeout(() => location.reload(), 800);
  } catch (e) {
    flash(`${button.textContent.trim()} failed: ${e.message}`, true);
  }
}

// --- instances -----------------------------------------------------------------------------

async function search(form, after) {
  const section = form.closest("section.app");
  const app = section.dataset.app;
  const q = new URLSearchParams();
  for (const k of ["q", "version", "state", "group"]) {
    const v = form.elements[k].value.trim();
    if (v) q.set(k, v);
  }
  q.set("limit", String(pageSize + 1));
  if (after) q.set("after", after);
  const table = section.querySelector("table.instances");
  const more = section.querySelector("p.more");
  let list;
  try {
    list = await api("GET", `/api/v1/apps/${enc(app)}/instances?${q}`);
  } catch (e) {
    flash("Search failed: " + e.message, true);
    return;
  }
  const next = list.length > pageSize ? list[pageSize - 1].machine_id : "";
  list = list.slice(0, pageSize);
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const inst of list) {
    const link = el("a", { href: "#" + inst.machine_id, class: "open" }, inst.machine_id);
    link.addEventListener("click", ev => { ev.preventDefault(); openInstance(section, inst.machine_id); });
    body.append(el("tr", {},
      el("td", { class: "machine" }, link), el("td", {}, inst.alias || ""), el("td", {}, inst.group || inst.group_id),
      el("td", {}, inst.version), el("td", {}, inst.state), el("td", {}, when(inst.last_check))));
  }
  if (list.length === 0) body.append(el("tr", {}, el("td", { colspan: "6", class: "muted" }, "no instance matches")));
  table.hidden = false;
  more.hidden = !next;
  more.querySelector("button").onclick = () => search(form, next);
}

function eventText(e) {
  return e.description + (e.previous_version ? ` (from ${e.previous_version})` : "");
}

// runs folds consecutive events (newest first) that say the same thing, such as a host's
// routine check-ins, into one row each: {first, last, n}.
function runs(evs) {
  const out = [];
  for (const e of evs) {
    const r = out[out.length - 1];
    if (r && eventText(r.last) === eventText(e) && r.last.version === e.version && r.last.target_version === e.target_version) {
      r.first = e;
      r.n++;
    } else {
      out.push({ first: e, last: e, n: 1 });
    }
  }
  return out;
}

async function openInstance(section, machine) {
  const app = section.dataset.app;
  const box = section.querySelector("div.instance");
  let inst, evs;
  try {
    [inst, evs] = await Promise.all([
      api("GET", `/api/v1/apps/${enc(app)}/instances/${enc(machine)}`),
      api("GET", `/api/v1/apps/${enc(app)}/instances/${enc(machine)}/events?limit=200`),
    ]);
  } catch (e) {
    flash(`Instance ${machine}: ${e.message}`, true);
    return;
  }
  const facts = [
    ["alias", inst.alias], ["group", inst.group || inst.group_id], ["version", inst.version], ["status", inst.state],
    ["board", inst.board], ["first seen", when(inst.first_seen)], ["last check-in", when(inst.last_check)],
    ["granted", inst.granted_version ? `${inst.granted_version} at ${when(inst.granted_at)}` : ""],
    ["installed", when(inst.installed_at)], ["failed", inst.failed_at ? `${when(inst.failed_at)} (error ${inst.last_error})` : ""],
    ["rolled back from", inst.rollback_version],
  ].filter(([, v]) => v);
  const dl = el("table", { class: "facts" }, ...facts.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v)))));
  const hist = el("table", { class: "events" },
    el("tr", {}, el("th", {}, "time"), el("th", {}, "event"), el("th", {}, "running"), el("th", {}, "target")),
    ...runs(evs).map(r => el("tr", {},
      el("td", {}, r.n > 1 ? `${when(r.first.at)} … ${when(r.last.at)}` : when(r.last.at)),
      el("td", {}, eventText(r.last) + (r.n > 1 ? ` × ${r.n}` : "")),
      el("td", {}, r.last.version), el("td", {}, r.last.target_version || ""))));
  if (evs.length === 0) hist.append(el("tr", {}, el("td", { colspan: "4", class: "muted" }, "no events recorded")));
  const close = el("button", { type: "button" }, "Close");
  close.addEventListener("click", () => { box.hidden = true; });
  box.replaceChildren(el("h4", {}, "Instance ", el("code", {}, machine), " "), close, dl,
    el("h4", {}, `Check-ins and events (newest first, up to 200)`), hist);
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}

// --- wiring --------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", signIn);
  document.getElementById("signout").addEventListener("click", signOut);
  for (const b of document.querySelectorAll("button.act")) b.addEventListener("click", () => act(b));
  for (const section of document.querySelectorAll("section.app")) {
    section.querySelector("select.history-range").addEventListener("change", () => loadCharts(section));
    const form = section.querySelector("form.search");
    form.addEventListener("submit", ev => { ev.preventDefault(); search(form, ""); });
    loadCharts(section);
    loadWaves(section);
  }
  showLogin();
  document.body.dataset.ready = "true";
});
