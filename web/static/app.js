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
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    const err = new Error((data && (data.detail || data.title)) || resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return data;
}

let sharedView = false;

async function route() {
  stopWatching();
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
  const input = {};
  for (const el of $("submit-inputs").querySelectorAll("input")) {
    if (el.type === "checkbox") input[el.name] = el.checked;
    else if (el.value === "") continue;
    else if (el.dataset.kind === "integer") input[el.name] = parseInt(el.value, 10);
    else if (el.dataset.kind === "number") input[el.name] = parseFloat(el.value);
    else input[el.name] = el.value;
  }
  try {
    const job = await api("POST", "/v1/jobs", { type: $("submit-type").value, input });
    tokens.set(job.id, job.token);
    location.hash = "#job=" + encodeURIComponent(job.id);
  } catch (e) {
    $("submit-error").textContent = e.message;
  }
});

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
  $("job-title").textContent = "Job " + id.slice(0, 8) + "…";
  $("job-error").textContent = "";
  $("job-download").hidden = true;
  $("job-preview-box").hidden = true;
  $("job-share-out").hidden = true;
  $("job-share").hidden = sharedView;
  resetLog();
  let token;
  try {
    token = await tokenFor(id);
  } catch (e) {
    return ($("job-error").textContent = "No access to this job: " + e.message);
  }
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

function render(j) {
  const final = ["succeeded", "failed", "canceled"].includes(j.state);
  // Answers can cross: a cancel's 202 ("running") may arrive after the
  // stream's "done". A final state is never overwritten.
  if (ended && !final) return;
  ended = final;
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
    const a = $("job-download");
    a.href = dl.url;
    a.hidden = false;
    const type = (j.result && j.result.content_type) || "";
    if (type.startsWith("image/")) {
      const inline = await api("POST", "/v1/jobs/" + encodeURIComponent(id) + "/links", { disposition: "inline" }, token);
      $("job-preview").src = inline.url;
      $("job-preview-box").hidden = false;
    }
  } catch (e) {
    $("job-error").textContent = "Could not make a download link: " + e.message;
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
