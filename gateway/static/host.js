// The host page: a project's conversations (status, transcript, summary), auto-select with
// its progress, and the stream backlog. The admin token lives in sessionStorage only.
"use strict";
(() => {
  const TOKEN_KEY = "echo:admin-token";
  const projectId = location.pathname.split("/").filter(Boolean)[1] || "";
  const MAX_DETAILS_IN_FLIGHT = 4;
  const JOB_POLL_MS = 1000;
  const $ = (id) => document.getElementById(id);
  let names = new Map(); // conversation id -> shown name

  class HttpError extends Error {
    constructor(status, detail) { super(detail || `HTTP ${status}`); this.status = status; }
  }

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (resp.status === 401 || resp.status === 403) {
      if (path.startsWith("/api/host/")) askToken("The admin token was refused; enter it again.");
      throw new HttpError(resp.status, data && data.detail);
    }
    if (!resp.ok) throw new HttpError(resp.status, data && typeof data.detail === "string" ? data.detail : resp.statusText);
    return data;
  }

  function say(text, isError = false) {
    const el = $("message");
    el.textContent = text;
    el.classList.toggle("error", isError);
    el.hidden = !text;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  function askToken(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("host").hidden = true;
    $("token-form").hidden = false;
    if (message) say(message, true);
    $("token-input").focus();
  }

  // Runs fn over items with at most `limit` in flight.
  async function bounded(items, limit, fn) {
    const results = new Array(items.length);
    let next = 0;
    const lane = async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await fn(items[i]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
    return results;
  }

  function conversationCard(detail) {
    const name = detail.participant_name || detail.title || "(no name)";
    const chunks = detail.chunks || [];
    const transcript = detail.merged_transcript
      || chunks.filter((c) => c.transcript).map((c) => c.transcript.trim()).join("\n");
    return el("article", { class: "card", "data-conversation": detail.id, "data-status": detail.status },
      el("h3", {}, `${name} `, el("span", { class: "state", "data-state": detail.status, textContent: detail.status })),
      el("p", { class: "muted", textContent:
        `Started ${detail.created_at || "?"}; ${chunks.length} parts; id ${detail.id}` }),
      el("h4", { textContent: "Transcript" }),
      el("div", { class: "transcript", "data-field": "transcript", textContent: transcript || "(none yet)" }),
      el("h4", { textContent: "Summary" }),
      el("div", { class: "transcript", "data-field": "summary", textContent: detail.summary || "(not ready)" }));
  }

  async function loadConversations() {
    const list = await api("GET", `/api/host/projects/${projectId}/conversations`);
    const details = await bounded(list, MAX_DETAILS_IN_FLIGHT,
      (c) => api("GET", `/api/host/conversations/${c.id}`).catch(() => c));
    names = new Map(details.map((d) => [d.id,
      `${d.participant_name || d.title || "(no name)"}, started ${d.created_at || "?"} (${d.id.slice(0, 8)})`]));
    const box = $("conversations");
    box.replaceChildren(...(details.length ? details.map(conversationCard)
      : [el("p", { class: "muted", textContent: "No conversations yet." })]));
  }

  async function loadStreams() {
    const box = $("streams");
    let data;
    try {
      data = await api("GET", "/api/admin/streams");
    } catch (err) {
      box.replaceChildren(el("p", { class: "muted", "data-unavailable": "true",
        textContent: err.status === 404 ? "Stream backlog not available on this server." : `Stream backlog: ${err.message}` }));
      return;
    }
    const cols = ["stream", "group", "length", "lag", "pending", "oldest_pending_age_s", "consumers", "dead_letters", "delayed"];
    const head = el("tr", {}, ...cols.map((c) => el("th", { scope: "col", textContent: c.replaceAll("_", " ") })));
    const rows = (data.streams || []).map((r) => el("tr", { "data-stream": r.stream, "data-group": r.group }, ...cols.map((c) => {
      const v = r[c];
      const text = v === null || v === undefined ? "" : Array.isArray(v) ? v.length : String(v);
      return el("td", { "data-field": c, textContent: c === "lag" && r.lag_source && r.lag_source !== "redis" ? `${text} (${r.lag_source})` : text });
    })));
    box.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
  }

  function renderJob(job) {
    const selected = job.selected_conversation_ids || [];
    const box = $("auto-select-result");
    box.dataset.status = job.status;
    box.replaceChildren(
      el("p", { "data-field": "progress", textContent:
        `${job.status}: ${job.batches_done ?? 0} of ${job.batches_total ?? "?"} batches done` }),
      el("p", { textContent: selected.length ? "Selected:" : (job.status === "done" || job.status === "completed" ? "Nothing selected." : "") }),
      el("ul", {}, ...selected.map((id) => el("li", { "data-conversation": id, textContent: names.get(id) || id }))),
      ...(job.errors && job.errors.length ? [el("p", { class: "message error", textContent: `${job.errors.length} batch errors` })] : []),
    );
  }

  async function autoSelect(event) {
    event.preventDefault();
    const button = $("auto-select-start");
    button.disabled = true;
    try {
      const started = await api("POST", `/api/projects/${projectId}/auto-select`, { query: $("auto-select-query").value.trim() });
      for (;;) {
        const job = await api("GET", started.status_url || `/api/jobs/${started.job_id}`);
        renderJob(job);
        if (!["queued", "running", "pending"].includes(job.status)) break;
        await new Promise((r) => setTimeout(r, JOB_POLL_MS));
      }
    } catch (err) {
      say(`Auto-select: ${err.message}`, true);
    } finally {
      button.disabled = false;
    }
  }

  async function refresh() {
    say("");
    try {
      const project = await api("GET", `/api/host/projects/${projectId}`);
      $("title").textContent = `Echo host: ${project.name || project.id}`;
      await Promise.all([loadConversations(), loadStreams()]);
      document.body.dataset.loaded = String(Date.now());
    } catch (err) {
      if (err.status !== 401 && err.status !== 403) say(err.status === 404 ? "This project does not exist." : err.message, true);
    }
  }

  function open() {
    $("token-form").hidden = true;
    $("host").hidden = false;
    refresh();
  }

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    say("");
    open();
  });
  $("refresh").addEventListener("click", refresh);
  $("forget").addEventListener("click", () => askToken(""));
  $("auto-select-form").addEventListener("submit", autoSelect);
  $("participant-link").href = `/p/${projectId}`;
  if (sessionStorage.getItem(TOKEN_KEY)) open(); else askToken("");
})();
