// Muster incident board: one page over the v1 API (docs/board.md). No
// external assets; credentials stay in this page's memory only.
"use strict";

const POLL_MS = 2000;
// secret: the shared secret (signed requests); token: a Cognito access
// token (with its refresh token and expiry). Never stored.
const access = { secret: null, roles: null, token: null, refresh: null, expires: 0 };
// What the server says of itself (/board/config.json).
let config = { auth: "open", localPhones: false, cognito: null };
let timer = null;
// What this page has seen of the incident it shows, poll by poll.
let seen = { id: null, points: [] };

const $ = (id) => document.getElementById(id);
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
const b64url = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

// Cognito hosted UI, authorization code with PKCE (RFC 7636, S256). The
// verifier and state wait in sessionStorage across the redirect (they are
// not credentials); the tokens live in this page's memory only.
const PKCE_KEY = "muster.board.pkce";

async function signIn() {
  const c = config.cognito;
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = b64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state, hash: location.hash }));
  const q = new URLSearchParams({
    response_type: "code",
    client_id: c.clientId,
    redirect_uri: c.redirectUri,
    scope: c.scopes.join(" "),
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  });
  location.assign(c.domain + "/oauth2/authorize?" + q.toString());
}

async function tokenRequest(fields) {
  const c = config.cognito;
  const r = await fetch(c.domain + "/oauth2/token", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(Object.assign({ client_id: c.clientId }, fields)).toString(),
    cache: "no-store",
    credentials: "omit",
  });
  const t = await r.json().catch(() => null);
  if (!r.ok || !t || !t.access_token) throw new Error("sign-in failed: " + ((t && (t.error_description || t.error)) || r.status));
  access.token = t.access_token;
  access.refresh = t.refresh_token || access.refresh;
  access.expires = Date.now() + (t.expires_in || 3600) * 1000;
}

// Back from the hosted UI: the code exchanged for tokens, the address bar
// cleaned of it. Whether this load was such a return.
async function finishSignIn() {
  const q = new URLSearchParams(location.search);
  if (!q.has("code") && !q.has("error")) return false;
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || "null");
  sessionStorage.removeItem(PKCE_KEY);
  history.replaceState(null, "", location.pathname + ((saved && saved.hash) || ""));
  if (q.has("error")) throw new Error("sign-in refused: " + (q.get("error_description") || q.get("error")));
  if (!saved || q.get("state") !== saved.state) throw new Error("sign-in answer does not match this page's request; sign in again");
  await tokenRequest({ grant_type: "authorization_code", code: q.get("code"), redirect_uri: config.cognito.redirectUri, code_verifier: saved.verifier });
  return true;
}

async function bearer() {
  if (access.token && Date.now() > access.expires - 60000 && access.refresh) {
    try {
      await tokenRequest({ grant_type: "refresh_token", refresh_token: access.refresh });
    } catch (e) {
      access.token = null;
    }
  }
  return access.token;
}

function signOut() {
  const c = config.cognito;
  access.token = access.refresh = null;
  location.assign(c.domain + "/logout?" + new URLSearchParams({ client_id: c.clientId, logout_uri: c.redirectUri }).toString());
}

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// The signature of docs/api.md: HMAC-SHA256 over method, path, sorted
// query pairs, time and the body's SHA-256.
async function sign(method, path, query, body) {
  const enc = new TextEncoder();
  const ts = Math.floor(Date.now() / 1000).toString();
  const pairs = query ? query.split("&").sort() : [];
  const bodyHash = hex(await crypto.subtle.digest("SHA-256", enc.encode(body)));
  const text = ["MUSTER-HMAC-SHA256", method, path, pairs.join("&"), ts, bodyHash].join("\n");
  const key = await crypto.subtle.importKey("raw", enc.encode(access.secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const sig = hex(await crypto.subtle.sign("HMAC", key, enc.encode(text)));
  return { "x-muster-timestamp": ts, "x-muster-signature": "sha256=" + sig };
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || "the request failed (" + status + ")");
    this.status = status;
    this.errors = problem?.errors || [];
  }
}

async function api(method, path, params, body) {
  const query = params ? new URLSearchParams(params).toString() : "";
  const text = body === undefined ? "" : JSON.stringify(body);
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (config.auth === "cognito") {
    const t = await bearer();
    if (!t) throw new ApiError(401, { detail: "sign in to see this" });
    headers.authorization = "Bearer " + t;
  }
  if (access.secret) Object.assign(headers, await sign(method, path, query, text));
  if (access.roles) headers["x-muster-roles"] = access.roles;
  const r = await fetch(path + (query ? "?" + query : ""), { method, headers, body: body === undefined ? undefined : text, cache: "no-store" });
  const answer = await r.json().catch(() => null);
  if (r.status === 401 && config.auth === "cognito") access.token = null;
  if (!r.ok) throw new ApiError(r.status, answer);
  return answer;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

function statusBadge(s) {
  return `<span class="status-${esc(s)}">${esc(s)}</span>`;
}

function sum(c) {
  return c ? c.pending + c.active + c.acknowledged + c.escalated + c.cancelled : 0;
}

function meter(label, n, of, cls) {
  const pct = of > 0 ? Math.min(100, (100 * n) / of) : 0;
  return `<div class="meter"><span>${esc(label)}</span>
    <div class="bar ${cls || ""}" role="progressbar" aria-label="${esc(label)}" aria-valuemin="0" aria-valuemax="${of}" aria-valuenow="${n}"><span data-pct="${pct.toFixed(1)}"></span></div>
    <span class="n" data-count="${esc(label)}">${n} / ${of}</span></div>`;
}

let shown = "";
// Draws `html` unless it is what is shown already (so focus stays put while
// nothing changes); whether it drew.
function show(html) {
  if (html === shown) return false;
  shown = html;
  $("main").innerHTML = html;
  // Widths through the CSSOM: the page's CSP allows no inline styles.
  document.querySelectorAll("[data-pct]").forEach((el) => (el.style.width = el.dataset.pct + "%"));
  return true;
}

function live(text) {
  $("live").textContent = text;
}

function failure(e) {
  if (e.status === 401 && config.auth === "cognito") return "Sign in to see this.";
  if (e.status === 401) return "The API wants signed requests: enter the shared secret under Access.";
  if (e.status === 403) return "Your role may not do this: " + e.message;
  return e.message;
}

async function listView() {
  const page = await api("GET", "/v1/incidents", { limit: "50" });
  const rows = page.incidents.map((i) => `<tr>
      <td><a href="#/incidents/${encodeURIComponent(i.incidentId)}">${esc(i.incidentId)}</a></td>
      <td>${esc(i.severity)}</td><td>${statusBadge(i.status)}</td>
      <td>${esc(i.stakeholderGroupId)}</td><td class="n">${i.members}</td><td>${esc(when(i.triggeredAt))}</td></tr>`);
  return show(`<h1>Incidents</h1>
    ${rows.length ? `<div class="table-wrap"><table id="incidents"><caption class="visually-hidden">Open incidents first, newest first</caption>
      <thead><tr><th>Incident</th><th>Severity</th><th>Status</th><th>Group</th><th class="n">People</th><th>Triggered</th></tr></thead>
      <tbody>${rows.join("")}</tbody></table></div>` : "<p>No incidents yet.</p>"}
    <p><a href="#/new">Declare an incident</a></p>`);
}

function people(list, empty) {
  if (!list.length) return `<p>${esc(empty)}</p>`;
  return `<div class="table-wrap"><table><thead><tr><th>Name</th><th>Tier</th><th>Status</th><th>Trying</th><th>Contacts (masked)</th></tr></thead><tbody>${list
    .map((s) => `<tr><td>${esc(s.name || s.stakeholder)}</td><td>${s.tier}</td><td>${esc(s.status)}</td>
      <td>${esc((s.inFlight || []).join(", "))}</td><td>${esc((s.contacts || []).map((c) => c[0] + " " + c[1]).join(", "))}</td></tr>`)
    .join("")}</tbody></table></div>`;
}

function timeline() {
  const pts = seen.points;
  if (pts.length < 2) return "<p>The timeline fills in as this page watches.</p>";
  const t0 = pts[0].t, t1 = pts[pts.length - 1].t;
  const top = Math.max(1, ...pts.map((p) => p.contacted));
  const xy = (p, k) => `${(((p.t - t0) / Math.max(1, t1 - t0)) * 1000).toFixed(1)},${(200 - (p[k] / top) * 190).toFixed(1)}`;
  const line = (k, colour) => `<polyline fill="none" stroke="${colour}" stroke-width="3" points="${pts.map((p) => xy(p, k)).join(" ")}"/>`;
  return `<svg class="timeline" viewBox="0 0 1000 200" preserveAspectRatio="none" role="img" aria-label="First contacts (blue) and acknowledgements (green) since this page opened">
    ${line("contacted", "#0b4fa8")}${line("acknowledged", "#0a6b2f")}</svg>
    <p>First contacts (blue) and acknowledgements (green), as this page has seen them since ${esc(new Date(t0).toLocaleTimeString())}.</p>`;
}

// Accepted counts per endpoint as this page has polled them (the last
// 10 s), for the pace the carrier is taking sends at.
const taken = {};
function measured(c) {
  const now = Date.now();
  const h = (taken[c.endpoint] = (taken[c.endpoint] || []).filter((x) => now - x.t <= 10000));
  h.push({ t: now, n: c.accepted });
  const first = h[0];
  return h.length > 1 && now > first.t ? ((c.accepted - first.n) * 1000) / (now - first.t) : null;
}

function carriersTable(list) {
  const rows = list.map((c) => {
    const rate = measured(c);
    const paused = c.pausedUntil ? "until " + new Date(c.pausedUntil).toLocaleTimeString() : "";
    return `<tr data-channel="${esc(c.channel)}"><th scope="row">${esc(c.channel)}</th><td>${esc(c.endpoint)}</td>
      <td class="n">${c.limitPerSec.toFixed(1)}</td><td class="n">${c.pacePerSec.toFixed(1)}</td>
      <td class="n">${rate === null ? "" : rate.toFixed(1)}</td><td class="n" data-count="accepted">${c.accepted}</td>
      <td class="n" data-count="throttled">${c.throttled}</td><td class="n">${(c.queueWaitMs / 1000).toFixed(1)} s</td><td>${esc(paused)}</td></tr>`;
  });
  return `<div class="table-wrap"><table id="carriers"><caption class="visually-hidden">Each channel's carrier: sends per second told, paced and measured; answers counted</caption>
    <thead><tr><th>Channel</th><th>Endpoint</th><th class="n">Limit /s</th><th class="n">Pace /s</th><th class="n">Taken /s (10 s)</th><th class="n">Accepted</th><th class="n">429s</th><th class="n">Queue wait</th><th>Paused</th></tr></thead>
    <tbody>${rows.join("")}</tbody></table></div>`;
}

async function detailView(id) {
  const path = "/v1/incidents/" + encodeURIComponent(id);
  const [v, waiting, pending, escalations, carriers] = await Promise.all([
    api("GET", path, { limit: "1" }),
    api("GET", path, { state: "active", route: "member", limit: "50" }),
    api("GET", path, { state: "pending", route: "member", limit: "50" }),
    api("GET", path, { route: "escalation", limit: "50" }),
    api("GET", "/v1/carriers"),
  ]);
  const p = v.progress, inc = v.incident, m = p.members;
  const members = Math.max(inc.cascades, sum(m));
  if (seen.id !== id) seen = { id, points: [] };
  const last = seen.points[seen.points.length - 1];
  if (!last || last.contacted !== p.contacted || last.acknowledged !== m.acknowledged) {
    seen.points.push({ t: Date.now(), contacted: p.contacted, acknowledged: m.acknowledged });
  }
  if (seen.points.length > 1800) seen.points.shift();
  const tiers = Object.entries(p.byTier)
    .map(([t, c]) => `<tr><th scope="row">Tier ${esc(t)}</th><td class="n">${c.pending}</td><td class="n">${c.active}</td><td class="n">${c.acknowledged}</td><td class="n">${c.escalated}</td><td class="n">${c.cancelled}</td></tr>`)
    .join("");
  const channels = Object.entries(p.byChannel)
    .map(([ch, c]) => `<tr><th scope="row">${esc(ch)}</th><td class="n">${c.trying}</td><td class="n">${c.acknowledged}</td></tr>`)
    .join("");
  const told = escalations.stakeholders
    .map((s) => `<tr><td>${esc(s.route.replace(/^escalation:/, ""))}</td><td>${esc(s.name || s.stakeholder)}</td><td>${esc(s.status)}</td></tr>`)
    .join("");
  const drew = show(`<h1>${esc(inc.trigger.incidentId)} ${statusBadge(inc.status)}</h1>
    <p>${esc(inc.trigger.severity)} · group ${esc(inc.trigger.stakeholderGroupId)} · triggered ${esc(when(inc.triggered_at))}${inc.closed_at ? " · closed " + esc(when(inc.closed_at)) : ""}</p>
    <p>${esc(inc.trigger.messageTemplate)}</p>
    ${updatesList(inc.updates)}
    <h2>Progress</h2>
    ${meter("Reached", p.contacted, members)}
    ${meter("Acknowledged", m.acknowledged, members, "ok")}
    ${quorum(v.quorum)}
    <p><span data-count="escalated">${m.escalated}</span> failed and escalated · <span data-count="undelivered">${p.undelivered}</span> reached no manager · <span data-count="needs-review">${v.needsReview}</span> need their contacts reviewed</p>
    <div class="table-wrap"><table id="by-tier"><thead><tr><th>Members</th><th class="n">Pending</th><th class="n">Active</th><th class="n">Acknowledged</th><th class="n">Escalated</th><th class="n">Cancelled</th></tr></thead>
      <tbody>${tiers}<tr><th scope="row">All</th><td class="n">${m.pending}</td><td class="n">${m.active}</td><td class="n" id="acknowledged">${m.acknowledged}</td><td class="n">${m.escalated}</td><td class="n" id="cancelled">${m.cancelled}</td></tr></tbody></table></div>
    <div class="table-wrap"><table><thead><tr><th>Channel</th><th class="n">Messages in flight</th><th class="n">Acknowledged on it</th></tr></thead><tbody>${channels}</tbody></table></div>
    <h2>Carriers</h2>${carriersTable(carriers.carriers)}
    <p>Limit: what the policy says the carrier takes; pace: what the limiter sends at now (lower after 429s); taken: sends the carrier accepted per second over the last 10 s this page watched.</p>
    <h2>Timeline</h2>${timeline()}
    <h2>Not acknowledged yet</h2>
    ${people(waiting.stakeholders.concat(pending.stakeholders), "Nobody is waiting.")}
    ${waiting.next || pending.next ? "<p>Showing the first 50 of each state.</p>" : ""}
    <h2>Escalations</h2>
    ${told ? `<div class="table-wrap"><table><thead><tr><th>About</th><th>Told</th><th>Status</th></tr></thead><tbody>${told}</tbody></table></div>` : "<p>No failure has been escalated.</p>"}
    <div class="actions">
      ${inc.status === "open" ? `<button type="button" class="danger" id="close">Close incident…</button>` : ""}
      ${inc.status === "closing" ? `<button type="button" id="close">Close again (re-queue the cancellation)…</button>` : ""}
      <button type="button" id="download">Download the audit trail</button>
    </div><p class="error" id="action-error"></p>`);
  if (!drew) return false;
  const close = $("close");
  if (close) close.addEventListener("click", () => askClose(inc.trigger.incidentId));
  $("download").addEventListener("click", () => download(inc.trigger.incidentId));
  return true;
}

function updatesList(list) {
  if (!list || !list.length) return "";
  const items = list
    .map((u) => `<li>${u.allClear ? "All clear" : `Update ${u.seq} (${esc(u.audience)})`} · ${esc(when(u.at))}: ${esc(u.message)}</li>`)
    .join("");
  return `<h2>Updates</h2><ol id="updates">${items}</ol>`;
}

function quorum(q) {
  if (!q) return "";
  const tiers = Object.entries(q.byTier)
    .map(([t, c]) => meter(`Quorum, tier ${t}`, c.acknowledged, c.required, "ok"))
    .join("");
  const all = q.required.count ? meter("Quorum", q.acknowledged, q.required.count, "ok") : "";
  const state = q.reachedAt
    ? `Quorum reached <time id="quorum-reached">${esc(when(q.reachedAt))}</time>${q.stopOnQuorum ? "; the cascades still open were cancelled" : ""}`
    : `Quorum not reached yet${q.stopOnQuorum ? "; once it is, the cascades still open are cancelled" : ""}`;
  return `<section id="quorum" aria-label="Quorum">${all}${tiers}<p>${state}</p></section>`;
}

function askClose(id) {
  const dialog = $("confirm-close");
  $("confirm-id").value = "";
  $("confirm-error").textContent = "";
  dialog.returnValue = "";
  stop();
  dialog.showModal();
  dialog.onclose = async () => {
    if (dialog.returnValue !== "close") return route();
    if ($("confirm-id").value.trim() !== id) {
      $("confirm-error").textContent = "That is not this incident's id.";
      dialog.showModal();
      return;
    }
    try {
      await api("POST", "/v1/incidents/" + encodeURIComponent(id) + "/close", null, {});
      live("Closing " + id);
    } catch (e) {
      $("action-error").textContent = failure(e);
    }
    route();
  };
}

// The whole trail, page by page, as the JSON lines `muster audit verify` reads.
async function download(id) {
  const lines = [];
  let cursor = null;
  try {
    do {
      const params = { limit: "1000" };
      if (cursor) params.cursor = cursor;
      const page = await api("GET", "/v1/incidents/" + encodeURIComponent(id) + "/audit", params);
      if (!cursor) page.seals.forEach((seal) => lines.push(JSON.stringify({ seal })));
      page.entries.forEach((e) => {
        delete e.address;
        lines.push(JSON.stringify(e));
      });
      live(`Audit trail: ${lines.length} lines`);
      cursor = page.next;
    } while (cursor);
  } catch (e) {
    $("action-error").textContent = failure(e);
    return;
  }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "application/x-ndjson" }));
  a.download = id + "-audit.jsonl";
  a.click();
  URL.revokeObjectURL(a.href);
}

function newView() {
  show(`<h1>Declare an incident</h1>
    <form id="trigger" novalidate>
      <label>Incident id <input name="incidentId" required maxlength="128" placeholder="INC-2026-0001"></label>
      <label>Severity <select name="severity"><option>P1</option><option>P2</option><option>P3</option><option>P4</option></select></label>
      <label>Stakeholder group <input name="stakeholderGroupId" required maxlength="128"></label>
      <label>Message <textarea name="messageTemplate" required maxlength="1000" rows="4"></textarea></label>
      <ul class="error" id="trigger-errors"></ul>
      <div class="actions"><button type="submit" class="primary">Declare</button></div>
    </form>`);
  $("trigger").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const fields = Object.fromEntries(new FormData(ev.target));
    try {
      const r = await api("POST", "/v1/incidents", null, { trigger: fields });
      location.hash = "#/incidents/" + encodeURIComponent(r.incidentId);
    } catch (e) {
      // The API's own validation, field by field.
      const items = e.errors.length ? e.errors.map((x) => `<li>${esc(x.field)}: ${esc(x.message)}</li>`) : [`<li>${esc(failure(e))}</li>`];
      $("trigger-errors").innerHTML = items.join("");
    }
  });
}

// muster serve's simulated phones: each console message answered through
// the carrier's own path (docs/board.md).
function answers(m) {
  const n = m.n;
  if (m.channel === "voice")
    return `<button type="button" data-answer="${n}" data-digits="1" data-body='{"digits":"1"}'>Answer, press 1</button>
      <button type="button" data-answer="${n}" data-digits="2" data-body='{"digits":"2"}'>Answer, press 2</button>`;
  if (m.channel === "sms") {
    const code = (m.body.match(/Reply (ACK \d+)/) || [])[1] || "ACK";
    return `<label class="inline">Reply <input data-reply="${n}" value="${esc(code)}" maxlength="160"></label>
      <button type="button" data-answer="${n}" data-sms="${n}">Send reply</button>`;
  }
  const what = m.channel === "push" ? "Tap Acknowledge" : "Press the link's button";
  return m.body.includes("/v1/ack/") ? `<button type="button" data-answer="${n}" data-body='{"action":"acknowledge"}'>${what}</button>` : "";
}

async function phonesView() {
  if (!config.localPhones) return show("<h1>Phones</h1><p>Only <code>muster serve</code> simulates phones; here the carriers are real.</p>");
  const page = await api("GET", "/local/messages");
  const rows = page.messages.slice(0, 100).map((m) => `<li class="message" data-n="${m.n}" data-stakeholder="${esc(m.stakeholder)}">
      <p><strong>${esc(m.channel)}</strong> to ${esc(m.stakeholder)} (${esc(m.to)}) · ${esc(m.incidentId)} · ${esc(when(m.sentAt))}</p>
      <p>${esc(m.subject)}</p><pre>${esc(m.body)}</pre>
      ${m.answers.length ? `<p class="answered">${esc(m.answers.join("; "))}</p>` : ""}
      <div class="actions">${answers(m)}</div></li>`);
  const drew = show(`<h1>Phones</h1>
    <p>Every message the console carriers sent, newest first. Answer one as its person would: the answer takes the carrier's own path (a call's key press, an SMS reply, a push action or the email link's button).</p>
    ${rows.length ? `<ol class="messages">${rows.join("")}</ol>` : "<p>No message yet.</p>"}<p class="error" id="action-error"></p>`);
  if (!drew) return false;
  document.querySelectorAll("[data-answer]").forEach((b) =>
    b.addEventListener("click", async () => {
      const n = b.dataset.answer;
      const body = b.dataset.sms ? { text: document.querySelector(`[data-reply="${n}"]`).value } : JSON.parse(b.dataset.body);
      try {
        const r = await api("POST", "/local/messages/" + n + "/answer", null, body);
        live(`Message ${n}: ` + (r.said ? r.said[r.said.length - 1] : r.outcome || (r.alreadyRecorded ? "already recorded" : "acknowledged")));
      } catch (e) {
        $("action-error").textContent = failure(e);
      }
      shown = "";
      phonesView();
    }),
  );
  return true;
}

function signInView(problem) {
  show(`<h1>Sign in</h1>${problem ? `<p class="error">${esc(problem)}</p>` : ""}
    <p>The board reads the API as you: sign in with your Muster account.</p>
    <div class="actions"><button type="button" class="primary" id="sign-in">Sign in</button></div>`);
  $("sign-in").addEventListener("click", signIn);
}

function stop() {
  if (timer) clearTimeout(timer);
  timer = null;
}

async function route() {
  stop();
  shown = "";
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/incidents\/(.+)$/);
  if (config.auth === "unconfigured") return show("<h1>Sign-in is not set up</h1><p>This deployment has no board app client: deploy with the BoardUrl parameter (docs/board.md).</p>");
  if (config.auth === "cognito" && !access.token) return signInView();
  if (hash === "#/new") return newView();
  const refresh = m ? () => detailView(decodeURIComponent(m[1])) : hash === "#/phones" ? phonesView : listView;
  const tick = async () => {
    try {
      if (await refresh()) live("Updated " + new Date().toLocaleTimeString());
    } catch (e) {
      show(`<p class="error">${esc(failure(e))}</p>`);
    }
    if (!$("confirm-close").open) timer = setTimeout(tick, POLL_MS);
  };
  await tick();
}

async function start() {
  try {
    const r = await fetch("/board/config.json", { cache: "no-store" });
    if (r.ok) config = Object.assign(config, await r.json());
  } catch (e) {
    // An older server: no sign-in, no phones.
  }
  $("phones-link").hidden = !config.localPhones;
  $("access-toggle").hidden = config.auth === "cognito" || config.auth === "unconfigured";
  $("sign-out").hidden = config.auth !== "cognito";
  if (config.auth === "cognito") {
    try {
      await finishSignIn();
    } catch (e) {
      return signInView(e.message);
    }
  }
  route();
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-out").addEventListener("click", signOut);
  $("access-toggle").addEventListener("click", () => {
    const panel = $("access");
    panel.hidden = !panel.hidden;
    $("access-toggle").setAttribute("aria-expanded", String(!panel.hidden));
  });
  $("access-save").addEventListener("click", () => {
    access.secret = $("secret").value || null;
    access.roles = $("roles").value || null;
    $("access").hidden = true;
    route();
  });
  window.addEventListener("hashchange", route);
  start();
});
