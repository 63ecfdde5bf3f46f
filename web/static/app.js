// claimcheck's browser UI: plain JavaScript, no build step, no third-party
// code. People sign in with a session cookie; jobs are watched with job
// tokens, which live only in this page's memory (or in a share link's
// #fragment, which browsers never send to a server).
"use strict";

const $ = (id) => document.getElementById(id);
const tokens = new Map(); // job id -> job token
let types = [];
let listTimer = 0;
let stream = null;

function show(view) {
  for (const v of ["login", "jobs", "job", "account"]) $("view-" + v).hidden = v !== view;
  $("nav").hidden = view === "login" || sharedView;
  $("main").focus();
}

function say(msg) { $("status").textContent = msg; }

// api calls a JSON endpoint; the session cookie rides along, and the
// browser adds Origin, which the server's CSRF check needs.
async function api(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers["Authorization"] = "Bearer " + token;
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    if (resp.ok) throw e; // a non-JSON error page (a proxy's, a missing route) is still an error below
  }
  if (!resp.ok) throw problemError(resp, data);
  return data;
}

// problemError is the Error for a refused request: its message is the
// problem's detail, and it keeps the status and the problem+json body.
function problemError(resp, data) {
  const err = new Error((data && (data.detail || data.title)) || resp.statusText || "HTTP " + resp.status);
  err.status = resp.status;
  err.problem = data || {};
  return err;
}

// busy shows what an action is doing in a status line and returns the
// function that clears it when the action ends, unless a newer message
// took the line meanwhile.
function busy(el, msg) {
  el.textContent = msg;
  el.classList.remove("error");
  return () => { if (el.textContent === msg) el.textContent = ""; };
}

// actionError says why a job page action failed, in its status line,
// until the next action.
function actionError(msg) {
  $("job-action-status").textContent = msg;
  $("job-action-status").classList.add("error");
}

const jobPath = (id, rest) => "/v1/jobs/" + encodeURIComponent(id) + (rest || "");

let sharedView = false;

async function route() {
  stopWatching();
  stopDeliveries();
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("job") && hash.has("token")) {
    // A shared, read-only job page: the token came in the fragment.
    sharedView = true;
    tokens.set(hash.get("job"), hash.get("token"));
    return openJob(hash.get("job"));
  }
  sharedView = false;
  try {
    await api("GET", "/v1/sessions");
  } catch (e) {
    if (e.status === 401) return show("login");
    return say("The server did not answer: " + e.message);
  }
  if (hash.has("job")) return openJob(hash.get("job"));
  if (location.hash === "#account") return openAccount();
  return openJobs();
}

// --- sign in and out ------------------------------------------------------

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    await api("POST", "/v1/sessions", { username: $("login-user").value, password: $("login-password").value });
    $("login-password").value = "";
    location.hash = "#jobs";
    route();
  } catch (e) {
    $("login-error").textContent = e.status === 429 ? "Too many attempts; wait a minute." : "Wrong user name or password.";
  }
});

$("signout").addEventListener("click", async () => {
  await api("DELETE", "/v1/sessions/current").catch(() => {});
  tokens.clear();
  show("login");
});

// --- jobs list and submit form ---------------------------------------------

async function openJobs() {
  show("jobs");
  if (types.length === 0) {
    types = (await api("GET", "/v1/job-types")).types;
    const sel = $("submit-type");
    sel.textContent = "";
    for (const t of types) sel.append(new Option(t.name, t.name));
    renderInputs();
  }
  await refreshList();
}

$("submit-type").addEventListener("change", renderInputs);

// renderInputs builds the form for the chosen type from its JSON Schema.
function renderInputs() {
  const t = types.find((x) => x.name === $("submit-type").value);
  const box = $("submit-inputs");
  box.querySelectorAll(":scope > :not(legend)").forEach((n) => n.remove());
  let help = t ? t.description : "";
  // A type whose workers are all gone is still accepted; say that its
  // jobs will wait rather than let them sit queued without a word.
  if (t && t.workers === 0) help += " No worker runs this type right now: its jobs wait in the queue until one starts.";
  $("submit-type-help").textContent = help;
  const props = (t && t.input_schema && t.input_schema.properties) || {};
  const required = new Set((t && t.input_schema && t.input_schema.required) || []);
  for (const [name, p] of Object.entries(props)) {
    const id = "in-" + name;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = (p.title || name) + (required.has(name) ? " (required)" : "");
    const input = document.createElement("input");
    input.id = id;
    input.name = name;
    input.dataset.kind = p.type || "string";
    if (p.type === "integer" || p.type === "number") {
      input.type = "number";
      input.step = p.type === "integer" ? "1" : "any";
      if (p.minimum !== undefined) input.min = p.minimum;
      if (p.maximum !== undefined) input.max = p.maximum;
    } else if (p.type === "boolean") {
      input.type = "checkbox";
    }
    if (p.default !== undefined) {
      if (p.type === "boolean") input.checked = p.default; else input.value = p.default;
    }
    input.required = required.has(name);
    box.append(label, input);
    if (p.description) {
      const help = document.createElement("p");
      help.className = "help";
      help.id = id + "-help";
      help.textContent = p.description;
      input.setAttribute("aria-describedby", help.id);
      box.append(help);
    }
  }
}

$("submit-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("submit-error").textContent = "";
  clearWebhookError();
  const input = {};
  for (const el of $("submit-inputs").querySelectorAll("input")) {
    if (el.type === "checkbox") input[el.name] = el.checked;
    else if (el.value === "") continue;
    else if (el.dataset.kind === "integer") input[el.name] = parseInt(el.value, 10);
    else if (el.dataset.kind === "number") input[el.name] = parseFloat(el.value);
    else input[el.name] = el.value;
  }
  const body = { type: $("submit-type").value, input };
  const hookURL = $("submit-webhook-url").value.trim();
  if (hookURL !== "") {
    const events = Array.from(document.querySelectorAll("input[name=webhook_event]:checked"), (el) => el.value);
    if (events.length === 0) return webhookError("Choose at least one event, or leave the URL empty.");
    body.webhook = { url: hookURL, events };
  }
  const done = busy($("status"), "Submitting…");
  try {
    const job = await api("POST", "/v1/jobs", body);
    tokens.set(job.id, job.token);
    hasWebhook.set(job.id, Boolean(job.webhook || body.webhook));
    $("submit-webhook-url").value = "";
    location.hash = "#job=" + encodeURIComponent(job.id);
  } catch (e) {
    if (body.webhook && e.status === 422 && aboutWebhook(e.problem)) webhookError(e.message, webhookPointers(e.problem));
    else $("submit-error").textContent = e.message;
  } finally {
    done();
  }
});

// webhookPointers are the JSON pointers under /webhook that a refusal's
// errors name (RFC 9457 problems of invalid-request carry them).
function webhookPointers(p) {
  return (Array.isArray(p.errors) ? p.errors : []).map((e) => e && e.pointer).filter((s) => typeof s === "string" && s.startsWith("/webhook"));
}

// aboutWebhook says whether a refusal of POST /v1/jobs is the webhook's
// alone: every error it lists points into /webhook, or (with no list) its
// detail names the webhook.
function aboutWebhook(p) {
  const errs = Array.isArray(p.errors) ? p.errors : [];
  if (errs.length > 0) return webhookPointers(p).length === errs.length;
  return typeof p.detail === "string" && /^webhook\b/i.test(p.detail);
}

// webhookError shows msg beside the webhook's fields, marking the one it
// is about (the URL unless the pointers name only the events).
function webhookError(msg, pointers = []) {
  $("submit-webhook-error").textContent = msg;
  const eventsOnly = pointers.length > 0 && pointers.every((s) => s.startsWith("/webhook/events"));
  const el = eventsOnly ? document.querySelector("input[name=webhook_event]") : $("submit-webhook-url");
  if (!eventsOnly) el.setAttribute("aria-invalid", "true");
  el.focus();
}

function clearWebhookError() {
  $("submit-webhook-error").textContent = "";
  $("submit-webhook-url").removeAttribute("aria-invalid");
}
$("submit-webhook-url").addEventListener("input", clearWebhookError);
document.querySelectorAll("input[name=webhook_event]").forEach((el) => el.addEventListener("change", clearWebhookError));

async function refreshList() {
  clearTimeout(listTimer);
  if ($("view-jobs").hidden) return;
  let list;
  try {
    list = await api("GET", "/v1/jobs?limit=50");
  } catch (e) {
    return say("Could not list jobs: " + e.message);
  }
  const body = $("jobs-table").tBodies[0];
  body.textContent = "";
  let active = false;
  for (const j of list.jobs) {
    const tr = body.insertRow();
    const a = document.createElement("a");
    a.href = "#job=" + encodeURIComponent(j.id);
    a.textContent = j.id.slice(0, 8) + "…";
    tr.insertCell().append(a);
    tr.insertCell().textContent = j.type;
    tr.insertCell().textContent = j.state;
    tr.insertCell().textContent = Math.round(j.progress.percent) + " %";
    tr.insertCell().textContent = new Date(j.created_at).toLocaleString();
    active = active || !["succeeded", "failed", "canceled"].includes(j.state);
  }
  if (active) listTimer = setTimeout(refreshList, 2000);
}

// --- one job: live progress, cancel, download, preview, share ---------------

async function tokenFor(id) {
  if (!tokens.has(id)) {
    const t = await api("POST", "/v1/jobs/" + encodeURIComponent(id) + "/token", {});
    tokens.set(id, t.token);
  }
  return tokens.get(id);
}

let current = null;

async function openJob(id) {
  show("job");
  current = id;
  ended = false;
  endedAt = 0;
  finishedAt = 0;
  $("job-title").textContent = "Job " + id.slice(0, 8) + "…";
  $("job-error").textContent = "";
  $("job-download").hidden = true;
  $("job-preview-box").hidden = true;
  $("job-share-out").hidden = true;
  $("job-share").hidden = sharedView;
  $("job-once").hidden = true;
  $("job-once-out").hidden = true;
  $("job-receipt").hidden = true;
  $("job-receipt-box").hidden = true;
  $("job-action-status").textContent = "";
  $("job-action-status").classList.remove("error");
  resetLog();
  resetDeliveries();
  let token;
  try {
    token = await tokenFor(id);
  } catch (e) {
    return ($("job-error").textContent = "No access to this job: " + e.message);
  }
  if (current !== id) return; // the reader moved on while the token came
  startDeliveries(id);
  // EventSource cannot send headers: the token goes in the query, which the
  // server never logs.
  stream = new EventSource("/v1/jobs/" + encodeURIComponent(id) + "/events?token=" + encodeURIComponent(token));
  stream.addEventListener("state", (e) => render(JSON.parse(e.data)));
  stream.addEventListener("progress", (e) => renderProgress(JSON.parse(e.data)));
  // Log lines: the stream sends those kept so far, then each as the job
  // writes it; after a dropped connection EventSource resumes after the
  // last one shown (the event id names it), so none repeats.
  stream.addEventListener("log", (e) => queueLog(JSON.parse(e.data)));
  stream.addEventListener("done", (e) => {
    render(JSON.parse(e.data));
    stopWatching();
  });
  // The server ends a stream at its token's expiry or revocation; EventSource
  // would reconnect with the dead token, so stop, and follow again with a
  // fresh token where this page can get one (the owner's, not a share link).
  stream.addEventListener("end", (e) => {
    stopWatching();
    const why = JSON.parse(e.data).reason === "token_revoked" ? "its token was revoked" : "its token expired";
    if (sharedView || current !== id) return say("Stopped following the job: " + why + ".");
    tokens.delete(id);
    openJob(id);
  });
  stream.onerror = () => {
    if (stream && stream.readyState === EventSource.CLOSED) say("Lost the connection to the job; reload to retry.");
  };
}

// --- the job's log pane ---------------------------------------------------

// The pane keeps at most as many lines as the server does, follows new
// lines while it is scrolled to the bottom, and stays put (offering a jump
// back) once the reader scrolls up. Lines arriving together (a page of the
// log on connect) are added in one frame.
const logKeep = 10000 + 50; // the server's lines, and room for its notes
let logQueue = [];
let logFrame = 0;
let logLines = 0;
let logDropped = 0;

function resetLog() {
  cancelAnimationFrame(logFrame);
  logFrame = 0;
  logQueue = [];
  logLines = 0;
  logDropped = 0;
  const pane = $("job-log");
  pane.textContent = "";
  const empty = document.createElement("p");
  empty.className = "log-empty";
  empty.textContent = "No log lines yet.";
  pane.append(empty);
  $("job-log-count").textContent = "";
  $("job-log-dropped").hidden = true;
  $("job-log-follow").hidden = true;
}

function queueLog(l) {
  logQueue.push(l);
  if (!logFrame) logFrame = requestAnimationFrame(flushLog);
}

function atBottom(pane) { return pane.scrollHeight - pane.scrollTop - pane.clientHeight < 4; }

function flushLog() {
  logFrame = 0;
  const pane = $("job-log");
  const follow = atBottom(pane);
  const frag = document.createDocumentFragment();
  for (const l of logQueue) {
    const row = document.createElement("div");
    if (l.dropped) {
      row.className = "note";
      row.textContent = l.line;
      logDropped += l.dropped;
    } else {
      row.className = "l";
      const t = document.createElement("span");
      t.className = "t";
      const d = new Date(l.time);
      t.textContent = d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
      t.title = d.toISOString();
      const x = document.createElement("span");
      x.className = "x";
      x.textContent = l.line;
      row.append(t, x);
      logLines++;
    }
    frag.append(row);
  }
  logQueue = [];
  const empty = pane.querySelector(".log-empty");
  if (empty) empty.remove();
  pane.append(frag);
  while (pane.childElementCount > logKeep) pane.firstElementChild.remove();
  $("job-log-count").textContent = logLines === 1 ? "1 line" : logLines.toLocaleString("en") + " lines";
  if (logDropped > 0) {
    $("job-log-dropped").textContent = logDropped + " earlier lines were dropped: a job's log keeps its newest 10,000 lines and 1 MiB.";
    $("job-log-dropped").hidden = false;
  }
  if (follow) pane.scrollTop = pane.scrollHeight;
  $("job-log-follow").hidden = atBottom(pane);
}

$("job-log").addEventListener("scroll", () => { $("job-log-follow").hidden = atBottom($("job-log")); });
$("job-log-follow").addEventListener("click", () => {
  const pane = $("job-log");
  pane.scrollTop = pane.scrollHeight;
  $("job-log-follow").hidden = true;
  pane.focus();
});

function stopWatching() {
  if (stream) stream.close();
  stream = null;
}

let ended = false; // the shown job reached a final state: nothing moves it back
let endedAt = 0; // when this page saw it end (its clock)
let finishedAt = 0; // when the job ended (the server's clock), if known

function render(j) {
  const final = ["succeeded", "failed", "canceled"].includes(j.state);
  // Answers can cross: a cancel's 202 ("running") may arrive after the
  // stream's "done". A final state is never overwritten.
  if (ended && !final) return;
  if (final && !ended) endedAt = Date.now();
  ended = final;
  if (final) {
    if ($("status").textContent === "Cancelling…") say("");
    if (j.finished_at) finishedAt = Date.parse(j.finished_at);
    wakeDeliveries(); // its completed event is on its way
  }
  if (j.type) $("job-type").textContent = j.type;
  $("job-state").textContent = j.state;
  if (j.progress) renderProgress(j.progress);
  if (j.error) $("job-error").textContent = j.error;
  $("job-cancel").hidden = final || sharedView;
  if (j.state === "succeeded") {
    renderProgress({ percent: 100, message: "done" });
    if (!sharedView) showResult(j);
  }
}

function renderProgress(p) {
  $("job-progress").value = p.percent;
  $("job-percent").textContent = Math.round(p.percent) + " %";
  if (p.message !== undefined) $("job-message").textContent = p.message;
}

async function showResult(j) {
  const id = current;
  const token = await tokenFor(id);
  try {
    const dl = await api("POST", "/v1/jobs/" + encodeURIComponent(id) + "/links", {}, token);
    if (current !== id) return;
    const a = $("job-download");
    a.href = dl.url;
    // The result's actions appear together, so none moves under a pointer
    // about to click it.
    a.hidden = false;
    $("job-once").hidden = false;
    $("job-receipt").hidden = false;
    const type = (j.result && j.result.content_type) || "";
    if (type.startsWith("image/")) {
      const inline = await api("POST", "/v1/jobs/" + encodeURIComponent(id) + "/links", { disposition: "inline" }, token);
      $("job-preview").src = inline.url;
      $("job-preview-box").hidden = false;
    }
  } catch (e) {
    $("job-error").textContent = "Could not make a download link: " + e.message;
    $("job-receipt").hidden = false;
  }
}

$("job-cancel").addEventListener("click", async () => {
  try {
    const j = await api("POST", "/v1/jobs/" + encodeURIComponent(current) + "/cancel", undefined, await tokenFor(current));
    render(j);
    say("Cancelling…");
  } catch (e) {
    $("job-error").textContent = e.message;
  }
});

$("job-share").addEventListener("click", async () => {
  const t = await api("POST", "/v1/jobs/" + encodeURIComponent(current) + "/token", { scope: "job:read" });
  const url = new URL(location.href);
  url.hash = "job=" + encodeURIComponent(current) + "&token=" + encodeURIComponent(t.token);
  $("job-share-url").value = url.toString();
  $("job-share-out").hidden = false;
  $("job-share-url").select();
});

// --- one-time link and receipt ------------------------------------------------

$("job-once").addEventListener("click", async () => {
  const id = current;
  const done = busy($("job-action-status"), "Making a one-time link…");
  $("job-once").disabled = true;
  try {
    const dl = await api("POST", jobPath(id, "/links"), { once: true }, await tokenFor(id));
    if (current !== id) return;
    $("job-once-url").value = new URL(dl.url, location.href).toString(); // absolute, to be pasted elsewhere
    const exp = new Date(dl.expires_at);
    $("job-once-expiry").textContent = "Unused, it expires " + relTime(exp) + " (" + exp.toLocaleString() + ").";
    $("job-once-out").hidden = false;
    $("job-once-url").select();
  } catch (e) {
    actionError("Could not make a one-time link: " + e.message);
  } finally {
    $("job-once").disabled = false;
    done();
  }
});

$("job-once-copy").addEventListener("click", async () => {
  const url = $("job-once-url").value;
  let copied = false;
  try {
    await navigator.clipboard.writeText(url);
    copied = true;
  } catch (e) {
    // No clipboard permission (an insecure origin, a headless browser):
    // the older way copies the selection.
    $("job-once-url").select();
    copied = document.execCommand && document.execCommand("copy");
  }
  const msg = copied ? "Copied the one-time link." : "Could not copy: the link is selected, copy it with your keyboard.";
  const clear = busy($("job-action-status"), msg);
  setTimeout(clear, 4000);
});

// The receipt is the worker fleet's signed statement of what ran and what
// it produced. This page saves it and shows its claims, decoded but not
// verified: verifying needs the fleet's keys and is the CLI's job, and a
// page that says "valid" without checking would be worse than none.
let receipt = ""; // the shown job's receipt, as downloaded

$("job-receipt").addEventListener("click", async () => {
  const id = current;
  const done = busy($("job-action-status"), "Fetching the receipt…");
  $("job-receipt").disabled = true;
  try {
    const resp = await fetch(jobPath(id, "/receipt"), {
      headers: { Authorization: "Bearer " + (await tokenFor(id)), Accept: "application/jwt" }, credentials: "same-origin" });
    const text = await resp.text();
    if (!resp.ok) {
      let data = null;
      try { data = JSON.parse(text); } catch (e) { /* not a problem+json body */ }
      throw problemError(resp, data);
    }
    const jwt = text.trim();
    const claims = decodeClaims(jwt);
    if (current !== id) return;
    receipt = jwt;
    saveFile(id + ".receipt.jwt", jwt, "application/jwt");
    renderReceipt(id, claims);
  } catch (e) {
    actionError("Could not get the receipt: " + e.message);
  } finally {
    $("job-receipt").disabled = false;
    done();
  }
});

// decodeClaims reads a compact JWS's header and payload for display; it
// checks nothing (see above).
function decodeClaims(jwt) {
  const parts = jwt.split(".");
  if (parts.length !== 3) throw new Error("the receipt is not a compact JWS");
  const part = (b64) => {
    const bin = atob(b64.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(b64.length / 4) * 4, "="));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  };
  return { header: part(parts[0]), payload: part(parts[1]) };
}

// NumericDate claims (RFC 7519 §2), shown as times beside their value.
const dateClaims = new Set(["iat", "nbf", "exp"]);

function renderReceipt(id, claims) {
  $("job-receipt-file").textContent = id + ".receipt.jwt";
  $("job-receipt-verify").textContent = "claimcheck receipt verify " + id + ".receipt.jwt --jwks " + location.origin + "/.well-known/jwks.json";
  const dl = $("job-receipt-claims");
  dl.textContent = "";
  const row = (name, value, when) => {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.claim = name;
    if (when) {
      const w = document.createElement("span");
      w.className = "when";
      w.textContent = " " + when.toLocaleString();
      dd.append(w);
    }
    dl.append(dt, dd);
  };
  const claim = (k, v) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) claim(k + "." + k2, v2); // result.sha256, …
      return;
    }
    let when = null;
    if (dateClaims.has(k) && typeof v === "number") when = new Date(v * 1000);
    else if (/_at$/.test(k) && typeof v === "string" && !isNaN(Date.parse(v))) when = new Date(v);
    row(k, typeof v === "string" ? v : JSON.stringify(v), when);
  };
  for (const [k, v] of Object.entries(claims.payload)) claim(k, v);
  row("signed by key", (claims.header.kid || "?") + " (" + (claims.header.alg || "?") + ", " + (claims.header.typ || "no typ") + ")");
  $("job-receipt-box").hidden = false;
}

// saveFile hands bytes made in the page to the browser as a download.
function saveFile(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000); // long enough for a slow save dialog
}

// relTime says when t is from now, roughly: "in 12 s", "3 min ago".
function relTime(t, now = Date.now()) {
  const s = Math.round((t - now) / 1000);
  const a = Math.abs(s);
  const n = a < 60 ? a + " s" : a < 3600 ? Math.round(a / 60) + " min" : a < 86400 ? Math.round(a / 3600) + " h" : Math.round(a / 86400) + " d";
  if (a < 1) return "now";
  return s > 0 ? "in " + n : n + " ago";
}

// --- webhook deliveries -----------------------------------------------------

// The panel polls GET /v1/jobs/{id}/deliveries every deliveriesEvery ms, one
// request at a time, while there is something to wait for: the job is
// active, an event's newest attempt is retrying, or the job ended and its
// completed event has no final attempt yet (for at most deliveriesGrace
// after the end: a webhook may not subscribe to it). Once every event's
// newest attempt is final and the job ended, it stops. A job submitted here
// without a webhook is never asked; one that may have none (opened from
// the list, none seen yet) only every deliveriesIdle ms while it runs, and
// briefly after its end.
const deliveriesEvery = 3000;
const deliveriesIdle = 10000;
const deliveriesGrace = 60000;
const finalOutcomes = new Set(["delivered", "failed", "dropped"]);
const hasWebhook = new Map(); // job id -> whether it has one, for jobs this page submitted
let deliveriesTimer = 0;
let deliveriesBusy = false;
let deliveriesGen = 0; // bumped on every (re)start, so a stale answer is dropped
let deliveriesJob = null;
let deliveries = [];
const deliveriesShown = 12;
let deliveriesAll = false; // the reader asked for every attempt

$("job-deliveries-more").addEventListener("click", () => {
  deliveriesAll = true;
  renderDeliveries(current);
  $("job-deliveries").focus();
});

function resetDeliveries() {
  stopDeliveries();
  deliveries = [];
  deliveriesAll = false;
  $("job-deliveries-box").hidden = true;
  $("job-deliveries").tBodies[0].textContent = "";
}

function stopDeliveries() {
  clearTimeout(deliveriesTimer);
  deliveriesTimer = 0;
  deliveriesJob = null;
  deliveriesGen++;
}

function startDeliveries(id) {
  stopDeliveries();
  if (hasWebhook.get(id) === false) return; // submitted here without one: nothing to ask
  deliveriesJob = id;
  pollDeliveries(id, deliveriesGen);
}

// wakeDeliveries polls again soon when the panel had stopped (a job that
// ended while the panel was idle, which only a crossed answer causes).
function wakeDeliveries() {
  if (deliveriesJob !== current || deliveriesBusy || deliveriesTimer) return;
  const gen = deliveriesGen;
  deliveriesTimer = setTimeout(() => pollDeliveries(current, gen), deliveriesEvery);
}

async function pollDeliveries(id, gen) {
  deliveriesTimer = 0;
  deliveriesBusy = true;
  let list;
  try {
    list = (await api("GET", jobPath(id, "/deliveries"), undefined, await tokenFor(id))).deliveries || [];
  } catch (e) {
    // No panel for a job whose deliveries this token cannot read or this
    // server does not keep; a passing failure (the server away) retries.
    if (gen === deliveriesGen && (e.status === undefined || e.status >= 500)) schedule(id, gen);
    return;
  } finally {
    deliveriesBusy = false;
  }
  if (gen !== deliveriesGen) return;
  deliveries = list;
  renderDeliveries(id);
  if (moreDeliveries(id, list)) schedule(id, gen);
}

function schedule(id, gen) {
  const every = ended || hasWebhook.get(id) === true || deliveries.length > 0 ? deliveriesEvery : deliveriesIdle;
  if (gen === deliveriesGen) deliveriesTimer = setTimeout(() => pollDeliveries(id, gen), every);
}

// latestAttempts is each event's newest attempt (the list is oldest first).
function latestAttempts(list) {
  const last = new Map();
  for (const d of list) last.set(d.id, d);
  return Array.from(last.values());
}

function moreDeliveries(id, list) {
  if (id !== current) return false;
  if (!ended) return true;
  const latest = latestAttempts(list);
  if (latest.some((d) => !finalOutcomes.has(d.outcome))) return true;
  if (latest.some((d) => d.event === "completed")) return false;
  // A job known to have a webhook waits for its completed event up to
  // deliveriesGrace; one that may have none, for a few polls (its webhook
  // may only subscribe to completed), counted from the end as the server
  // dated it when known, else as this page saw it, so a job that ended
  // long ago costs one request.
  const expected = hasWebhook.get(id) === true || list.length > 0;
  const since = Math.min(endedAt || Date.now(), finishedAt || Infinity);
  return Date.now() - since < (expected ? deliveriesGrace : 4 * deliveriesEvery);
}

function renderDeliveries(id) {
  const box = $("job-deliveries-box");
  box.hidden = deliveries.length === 0;
  if (box.hidden) return;
  const body = $("job-deliveries").tBodies[0];
  body.textContent = "";
  const now = Date.now();
  const latest = latestAttempts(deliveries);
  // Newest first: the top row is how things stand. A webhook on progress
  // or log events makes many attempts; past deliveriesShown they wait
  // behind a button.
  const rows = deliveries.slice().reverse();
  const shown = deliveriesAll ? rows : rows.slice(0, deliveriesShown);
  $("job-deliveries-more").hidden = shown.length === rows.length;
  $("job-deliveries-more").textContent = "Show all " + rows.length + " attempts";
  for (const d of shown) {
    const tr = body.insertRow();
    tr.dataset.id = d.id;
    tr.dataset.event = d.event;
    tr.dataset.outcome = d.outcome;
    const cell = (label, text, cls) => {
      const td = tr.insertCell();
      td.dataset.label = label;
      if (text !== undefined) td.textContent = text;
      if (cls) td.className = cls;
      return td;
    };
    const ev = document.createElement("span"); // one grid item at phone width
    ev.textContent = d.event;
    cell("Event").append(ev);
    const at = document.createElement("span");
    at.className = "sub";
    at.textContent = new Date(d.at).toLocaleTimeString([], { hour12: false }) + (d.duration_ms !== undefined ? " · " + d.duration_ms + " ms" : "");
    at.title = d.at;
    ev.append(at);
    cell("Attempt", String(d.attempt));
    const badge = document.createElement("span");
    badge.className = "badge " + (finalOutcomes.has(d.outcome) || d.outcome === "retrying" ? d.outcome : "dropped");
    badge.textContent = d.outcome;
    cell("Outcome").append(badge);
    cell("Status", d.status_code ? String(d.status_code) : "—", d.status_code ? "" : "none");
    cell("Error", d.error || "", d.error ? "err" : "none");
    if (d.next_retry_at && !latest.includes(d)) {
      cell("Next retry", "retried", "muted");
    } else if (d.next_retry_at) {
      const t = new Date(d.next_retry_at);
      const td = cell("Next retry", relTime(t, now));
      td.title = t.toLocaleString();
    } else {
      cell("Next retry", "—", "none");
    }
  }
  const count = (o) => latest.filter((d) => d.outcome === o).length;
  const parts = [];
  for (const o of ["delivered", "retrying", "failed", "dropped"]) if (count(o)) parts.push(count(o) + " " + o);
  $("job-deliveries-summary").textContent = latest.length + (latest.length === 1 ? " event" : " events") + ": " + parts.join(", ") + ".";
}

// --- sessions and API keys ----------------------------------------------------

async function openAccount() {
  show("account");
  $("key-new").hidden = true;
  $("revoke-all-confirm").hidden = true;
  const [sessions, keys] = await Promise.all([api("GET", "/v1/sessions"), api("GET", "/v1/api-keys")]);
  const ul = $("sessions");
  ul.textContent = "";
  for (const s of sessions.sessions) {
    const li = document.createElement("li");
    li.textContent = (s.current ? "This browser" : s.user_agent || "unknown client") + " — since " + new Date(s.created_at).toLocaleString() + " ";
    if (!s.current) li.append(revokeButton("Revoke session", "/v1/sessions/" + encodeURIComponent(s.id)));
    ul.append(li);
  }
  const kl = $("keys");
  kl.textContent = "";
  for (const k of keys.api_keys) {
    const li = document.createElement("li");
    li.textContent = k.prefix + "… " + (k.name || "(no name)") + " — " + k.scopes.join(", ") +
      (k.last_used ? " — last used " + new Date(k.last_used).toLocaleString() : " — never used") + " ";
    li.append(revokeButton("Revoke key " + (k.name || k.prefix), "/v1/api-keys/" + encodeURIComponent(k.id)));
    kl.append(li);
  }
}

function revokeButton(label, path) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "secondary";
  b.textContent = "Revoke";
  b.setAttribute("aria-label", label);
  b.addEventListener("click", async () => {
    await api("DELETE", path).catch((e) => say(e.message));
    openAccount();
  });
  return b;
}

$("signout-all").addEventListener("click", async () => {
  await api("DELETE", "/v1/sessions").catch(() => {});
  tokens.clear();
  show("login");
});

// Revoking every key cannot be undone, so it asks first, in the page (a
// dialog box would be easy to click through and hard to test).
$("revoke-all-keys").addEventListener("click", () => {
  $("revoke-all-confirm").hidden = false;
  $("revoke-all-no").focus();
});
$("revoke-all-no").addEventListener("click", () => {
  $("revoke-all-confirm").hidden = true;
  $("revoke-all-keys").focus();
});
$("revoke-all-yes").addEventListener("click", async () => {
  try {
    const r = await api("DELETE", "/v1/api-keys");
    await openAccount();
    say(r.revoked === 1 ? "Revoked 1 API key." : "Revoked " + r.revoked + " API keys.");
  } catch (e) {
    say(e.message);
  }
});

$("key-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { name: $("key-name").value };
  if ($("key-scope").value) body.scopes = [$("key-scope").value];
  const k = await api("POST", "/v1/api-keys", body);
  await openAccount();
  $("key-secret").textContent = k.key;
  $("key-new").hidden = false;
});

window.addEventListener("hashchange", route);
route();
