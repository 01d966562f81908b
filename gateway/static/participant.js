// The participant page: records standalone chunks (a fresh MediaRecorder each), uploads
// each through get-upload-url -> presigned POST to S3 -> confirm-upload, keeps unsent
// chunks in IndexedDB, finishes, and shows the transcript and summary when ready.
// Uses the participant API exactly as ../shared/CONTRACT.md describes it. No build step.
"use strict";
(() => {
  const { HttpError, api, withRetry, chunkStore: store, uploadChunk } = window.EchoNet;
  const params = new URLSearchParams(location.search);
  const projectId = location.pathname.split("/").filter(Boolean)[1] || "";
  const chunkSecondsParam = Number(params.get("chunk_seconds"));
  const CHUNK_SECONDS = chunkSecondsParam >= 1 && chunkSecondsParam <= 600 ? chunkSecondsParam : 30;
  // Chunk states while recording (confirm answers update them too); then the transcript.
  const POLL_RECORDING_MS = 10000;
  const POLL_RESULT_MS = 2000;
  const PING_MS = 15000;
  const MIN_LAST_CHUNK_MS = 500;
  const CONVERSATION_KEY = `echo:conversation:${projectId}`;
  const $ = (id) => document.getElementById(id);

  let project = null;
  let conversation = null; // {id, finished}
  let stream = null;
  let recording = false;
  let recorderDone = null;
  let seq = 0;
  let startedAtMs = 0;
  let elapsedTimer = null;
  let pingTimer = null;
  let pollTimer = null;
  let queueRunning = false;
  const drainWaiters = [];
  const local = new Map(); // local chunk id -> record (audio made on this device)
  const remote = new Map(); // server chunk id -> row of the chunks route

  // --- messages and rendering

  function say(text, isError = false) {
    const el = $("message");
    el.textContent = text;
    el.classList.toggle("error", isError);
    el.hidden = !text;
  }

  function show(id, visible) { $(id).hidden = !visible; }

  const render = () => window.EchoChunkList.render($("chunks"), $("chunks-heading"), local, remote);


  function setState(c, state, error = "") {
    c.state = state;
    c.error = error;
    render();
  }

  // --- conversation

  function saveConversation() {
    localStorage.setItem(CONVERSATION_KEY, JSON.stringify(conversation));
  }

  async function ensureConversation(name) {
    if (conversation) return conversation;
    const { data } = await withRetry(() => api("POST", `/projects/${projectId}/conversations/initiate`, {
      name: name || "", tag_id_list: [], source: "PORTAL_AUDIO", user_agent: navigator.userAgent,
    }));
    conversation = { id: data.id, finished: false };
    saveConversation();
    startPolling();
    return conversation;
  }

  // The portal's check: can this browser PUT to the bucket? Only a warning here.
  async function checkUploads() {
    try {
      const { data } = await api("POST", `/conversations/${conversation.id}/check-s3`);
      const resp = await fetch(data.probe_url, {
        method: "PUT", body: "probe", headers: { "Content-Type": "text/plain" },
      });
      if (!resp.ok) throw new Error(`probe answered ${resp.status}`);
    } catch (err) {
      say(`Uploads may not work from this browser yet (${err.message}); parts are kept and retried.`);
    }
  }

  // --- recording

  function pickMimeType() {
    const candidates = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"];
    return candidates.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t)) || "";
  }

  function extensionOf(type) {
    if (type.includes("mp4")) return "m4a";
    if (type.includes("ogg")) return "ogg";
    if (type.includes("wav")) return "wav";
    return "webm";
  }

  async function enqueueBlob(blob, type, startedAt) {
    seq += 1;
    const rec = {
      id: crypto.randomUUID(), projectId, conversationId: conversation.id, seq,
      blob, contentType: type, filename: `chunk-${String(seq).padStart(4, "0")}.${extensionOf(type)}`,
      timestamp: startedAt.toISOString(), serverId: null, fileUrl: null, posted: false,
    };
    await store.put(rec);
    local.set(rec.id, { ...rec, state: "queued", error: "", confirmed: false });
    render();
    runQueue();
  }

  function recordChunk(mimeType) {
    const parts = [];
    const startedAt = new Date();
    const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
    recorder.ondataavailable = (e) => { if (e.data && e.data.size) parts.push(e.data); };
    recorder.onstop = () => {
      const type = recorder.mimeType || mimeType || "audio/webm";
      // Finish pressed just after a chunk began leaves a sliver with no speech in it, which
      // a decoder may refuse: the participant would see a failed part for nothing.
      const sliver = !recording && Date.now() - startedAt.getTime() < MIN_LAST_CHUNK_MS;
      if (parts.length && !sliver) enqueueBlob(new Blob(parts, { type }), type, startedAt);
      if (recording) recordChunk(mimeType);
      else if (recorderDone) recorderDone();
    };
    recorder.start();
    // A fresh recorder per chunk: each chunk is a standalone, playable file.
    const timer = setTimeout(() => { if (recorder.state !== "inactive") recorder.stop(); }, CHUNK_SECONDS * 1000);
    stopCurrent = () => { clearTimeout(timer); if (recorder.state !== "inactive") recorder.stop(); else recorderDone(); };
  }
  let stopCurrent = () => {};

  function micMessage(err) {
    if (err && (err.name === "NotAllowedError" || err.name === "SecurityError")) {
      return "Microphone access was denied. Allow it in your browser's site settings and reload, or type your contribution below.";
    }
    if (err && err.name === "NotFoundError") return "No microphone was found. You can type your contribution below.";
    return `The microphone could not be started (${err && err.message}). You can type your contribution below.`;
  }

  async function startRecording() {
    $("record").disabled = true;
    try {
      await ensureConversation($("name-input").value.trim());
    } catch (err) {
      say(err.message, true);
      $("record").disabled = false;
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      say(micMessage(err), true);
      showText();
      return;
    }
    say("");
    await checkUploads();
    recording = true;
    startedAtMs = Date.now();
    show("start", false);
    show("recording", true);
    elapsedTimer = setInterval(() => {
      const s = Math.floor((Date.now() - startedAtMs) / 1000);
      $("elapsed").textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    }, 500);
    recordChunk(pickMimeType());
    pingTimer = setInterval(ping, PING_MS);
    $("finish").focus();
  }

  // Telemetry for the host's live view; never retried, never shown.
  function ping() {
    if (!conversation || !navigator.onLine) return;
    api("POST", `/conversations/${conversation.id}/ping`, {
      state: "recording", recorded_seconds: Math.round((Date.now() - startedAtMs) / 1000),
      client_ts: new Date().toISOString(), network: navigator.onLine ? "online" : "offline",
    }).catch(() => {});
  }

  async function stopRecording() {
    if (!recording) return;
    recording = false;
    clearInterval(elapsedTimer);
    clearInterval(pingTimer);
    await new Promise((resolve) => { recorderDone = resolve; stopCurrent(); });
    recorderDone = null;
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
  }

  function persisted(c) {
    const { state, error, confirmed, ...rec } = c;
    return rec;
  }

  async function runQueue() {
    if (queueRunning) return;
    queueRunning = true;
    try {
      for (;;) {
        const next = [...local.values()]
          .filter((c) => c.blob && (c.state === "queued" || c.state === "uploading"))
          .sort((a, b) => a.timestamp.localeCompare(b.timestamp))[0];
        if (!next) break;
        try {
          const state = await uploadChunk(next, setState, (c) => store.put(persisted(c)));
          next.confirmed = true;
          next.blob = null;
          setState(next, state);
        } catch (err) {
          next.blob = null;
          setState(next, "failed", err.message);
        }
        await store.remove(next.id);
        poll();
      }
    } finally {
      queueRunning = false;
      drainWaiters.splice(0).forEach((resolve) => resolve());
    }
  }

  function drained() {
    const pending = [...local.values()].some((c) => c.blob);
    if (!pending && !queueRunning) return Promise.resolve();
    return new Promise((resolve) => { drainWaiters.push(resolve); runQueue(); });
  }

  // --- finish and results

  async function finish() {
    $("finish").disabled = true;
    $("text-finish").disabled = true;
    await stopRecording();
    show("recording", false);
    show("text", false);
    show("start", false);
    show("result", true);
    $("result-status").textContent = "Sending the last parts...";
    while ([...local.values()].some((c) => c.blob)) await drained();
    await withRetry(() => api("POST", `/conversations/${conversation.id}/finish`));
    conversation.finished = true;
    saveConversation();
    startPolling();
    $("result-status").textContent = "Transcribing...";
    $("result-heading").focus();
    poll();
  }

  function showResult(conv, chunks) {
    const texts = chunks.filter((c) => c.transcript).map((c) => c.transcript.trim());
    if (texts.length) $("transcript").textContent = texts.join("\n");
    if (conv.summary) $("summary").textContent = conv.summary;
    const done = chunks.filter((c) => c.status === "transcribed" || c.status === "failed").length;
    const finalized = Boolean(conv.processing && conv.processing.finalized_at) || conv.status === "finalized";
    $("result-status").textContent = finalized
      ? (conv.summary ? "Done." : "Transcript ready; the summary is being written...")
      : `Transcribing... (${done} of ${chunks.length} parts done)`;
    $("result").dataset.finalized = String(finalized);
    return finalized && Boolean(conv.summary);
  }

  async function poll() {
    if (!conversation) return;
    try {
      const base = `/projects/${projectId}/conversations/${conversation.id}`;
      const [{ data: chunks }, { data: conv }] = await Promise.all([api("GET", `${base}/chunks`), api("GET", base)]);
      remote.clear();
      for (const row of chunks) remote.set(row.id, row);
      render();
      if (conversation.finished && showResult(conv, chunks)) stopPolling();
    } catch (err) {
      if (err instanceof HttpError && [403, 404, 410].includes(err.status)) {
        say("This conversation is no longer available.", true);
        stopPolling();
      }
    }
  }

  function startPolling() {
    const every = conversation && conversation.finished ? POLL_RESULT_MS : POLL_RECORDING_MS;
    if (pollTimer && pollTimer.every === every) return;
    stopPolling();
    pollTimer = { id: setInterval(poll, every), every };
  }

  function stopPolling() {
    if (pollTimer) clearInterval(pollTimer.id);
    pollTimer = null;
  }

  // --- text mode

  function showText() {
    show("start", false);
    show("text", true);
    $("text-input").focus();
  }

  async function sendText(event) {
    event.preventDefault();
    const content = $("text-input").value.trim();
    if (!content) return;
    $("text-send").disabled = true;
    try {
      await ensureConversation($("name-input").value.trim());
      const timestamp = new Date().toISOString(); // the same on every retry: no second chunk
      await withRetry(() => api("POST", `/conversations/${conversation.id}/upload-text`, {
        timestamp, content, source: "PORTAL_TEXT",
      }));
      $("text-input").value = "";
      say("Text sent.");
      await poll();
    } catch (err) {
      say(err.message, true);
    } finally {
      $("text-send").disabled = false;
    }
  }

  // --- start

  function networkNote() {
    $("network").textContent = navigator.onLine ? ""
      : "You are offline. Parts are kept on this device and sent when the connection is back.";
    if (navigator.onLine) runQueue();
  }

  async function resume() {
    const saved = JSON.parse(localStorage.getItem(CONVERSATION_KEY) || "null");
    if (!saved || !saved.id) return;
    conversation = saved;
    for (const rec of await store.all()) {
      if (rec.conversationId !== conversation.id) continue;
      seq = Math.max(seq, rec.seq);
      local.set(rec.id, { ...rec, state: "queued", error: "", confirmed: false });
    }
    startPolling();
    runQueue();
    if (conversation.finished) {
      show("start", false);
      show("result", true);
      poll();
    }
  }

  async function main() {
    window.addEventListener("online", networkNote);
    window.addEventListener("offline", networkNote);
    $("record").addEventListener("click", startRecording);
    $("text-mode").addEventListener("click", showText);
    $("finish").addEventListener("click", finish);
    $("text-finish").addEventListener("click", finish);
    $("text-form").addEventListener("submit", sendText);
    $("again").addEventListener("click", () => { localStorage.removeItem(CONVERSATION_KEY); location.reload(); });
    try {
      ({ data: project } = await withRetry(() => api("GET", `/projects/${projectId}`)));
    } catch (err) {
      say(err.status === 404 ? "This project does not exist." : err.message, true);
      return;
    }
    document.title = `Echo: ${project.default_conversation_title || "record a conversation"}`;
    $("title").textContent = project.default_conversation_title || "Record a conversation";
    $("description").textContent = project.default_conversation_description || "";
    $("finish-text").textContent = project.default_conversation_finish_text || "";
    if (!project.is_conversation_allowed) {
      say("This project is not open for participation.", true);
      return;
    }
    await resume();
    if (conversation && conversation.finished) return;
    if (project.default_conversation_ask_for_participant_name && !conversation) {
      $("name-label").textContent = project.conversation_ask_for_participant_name_label || "Your name";
      show("name-form", true);
      $("name-form").addEventListener("submit", (e) => {
        e.preventDefault();
        if (!$("name-input").value.trim()) return;
        show("name-form", false);
        show("start", true);
        $("record").focus();
      });
      $("name-input").focus();
    } else {
      if (conversation) $("record").textContent = "Continue recording";
      show("start", true);
    }
    document.body.dataset.ready = "true";
  }

  main();
})();
