// The participant page's network side: the participant API with retries and back-off,
// IndexedDB for chunks not yet sent, and the upload of one chunk (get-upload-url ->
// presigned POST to S3 -> confirm-upload). Used by participant.js; no build step.
"use strict";
window.EchoNet = (() => {
  const API = "/api/participant";
  const CONFIRM_RETRY_MS = 60000;
  const MAX_BACKOFF_MS = 15000;

  // --- HTTP

  class HttpError extends Error {
    constructor(status, detail, retryAfterS) {
      super(detail || `HTTP ${status}`);
      this.status = status;
      this.retryAfterS = retryAfterS;
    }
  }

  const isTransient = (err) => !(err instanceof HttpError) || err.status === 408
    || err.status === 429 || err.status >= 500;

  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(API + path, init);
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!resp.ok) {
      const retry = Number(resp.headers.get("Retry-After"));
      throw new HttpError(resp.status, data && typeof data.detail === "string" ? data.detail : resp.statusText,
        Number.isFinite(retry) && retry >= 0 ? retry : null);
    }
    return { status: resp.status, data };
  }

  function backoffMs(err, attempt) {
    if (err instanceof HttpError && err.retryAfterS !== null && err.retryAfterS !== undefined) {
      return err.retryAfterS * 1000 + Math.random() * 250;
    }
    return Math.min(500 * 2 ** attempt, MAX_BACKOFF_MS) * (0.75 + Math.random() * 0.5);
  }

  // Waits ms, or less when the network comes back.
  function pause(ms) {
    return new Promise((resolve) => {
      const done = () => { clearTimeout(timer); window.removeEventListener("online", done); resolve(); };
      const timer = setTimeout(done, ms);
      if (!navigator.onLine) window.addEventListener("online", done);
    });
  }

  // Retries fn on transient errors (network, 408, 429 after Retry-After, 5xx), for ever
  // while the network is away; other errors after giveUpMs (0: at once).
  // onWaiting(offline) is told each time it waits, before it tries again.
  async function withRetry(fn, giveUpMs = 0, onWaiting = () => {}) {
    const start = Date.now();
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await fn();
      } catch (err) {
        const offline = !(err instanceof HttpError);
        if (!offline && !isTransient(err) && Date.now() - start >= giveUpMs) throw err;
        onWaiting(offline);
        await pause(backoffMs(err, Math.min(attempt, 10)));
      }
    }
  }

  // --- IndexedDB: chunks not yet confirmed survive a reload or a closed tab

  const store = (() => {
    let dbPromise = null;
    const open = () => {
      dbPromise = dbPromise || new Promise((resolve, reject) => {
        const req = indexedDB.open("echo-participant", 1);
        req.onupgradeneeded = () => req.result.createObjectStore("chunks", { keyPath: "id" });
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
      return dbPromise;
    };
    const run = async (mode, op) => {
      try {
        const db = await open();
        return await new Promise((resolve, reject) => {
          const tx = db.transaction("chunks", mode);
          const req = op(tx.objectStore("chunks"));
          tx.oncomplete = () => resolve(req.result);
          tx.onerror = () => reject(tx.error);
        });
      } catch (err) {
        console.warn("IndexedDB unavailable; chunks are kept in memory only", err);
        return undefined;
      }
    };
    return {
      put: (rec) => run("readwrite", (s) => s.put(rec)),
      remove: (id) => run("readwrite", (s) => s.delete(id)),
      all: async () => (await run("readonly", (s) => s.getAll())) || [],
    };
  })();

  // --- uploads, one chunk at a time in recording order

  async function postToS3(grant, c) {
    const form = new FormData();
    for (const [k, val] of Object.entries(grant.fields)) form.append(k, val);
    form.append("file", c.blob, c.filename); // last, as S3 requires
    const resp = await fetch(grant.upload_url, { method: "POST", body: form });
    if (!resp.ok) throw new HttpError(resp.status, `storage answered ${resp.status}`, null);
  }

  // Uploads chunk c (its blob), telling setState(c, state) as it goes and persist(c) once
  // the object is in S3 (so a reload only confirms it). Resolves to "uploaded" or
  // "pending_verification"; rejects when the chunk cannot be sent.
  async function uploadChunk(c, setState, persist) {
    const cid = c.conversationId;
    // Without a network a chunk waits queued; with one, it is uploading (retries included).
    const waiting = (offline) => setState(c, offline ? "queued" : "uploading");
    const attempt = (fn) => () => { if (c.state !== "uploading") setState(c, "uploading"); return fn(); };
    for (let round = 0; ; round += 1) {
      if (!c.posted) {
        setState(c, "uploading");
        const { data: grant } = await withRetry(attempt(() => api("POST", `/conversations/${cid}/get-upload-url`, {
          filename: c.filename, content_type: c.contentType, conversation_id: cid,
        })), 0, waiting);
        try {
          await postToS3(grant, c);
        } catch (err) {
          // A new URL (a new chunk id) for every retry, as the portal does.
          if (err instanceof HttpError && !isTransient(err) && round >= 5) throw err;
          waiting(!(err instanceof HttpError));
          await pause(backoffMs(err, Math.min(round, 10)));
          continue;
        }
        Object.assign(c, { serverId: grant.chunk_id, fileUrl: grant.file_url, posted: true });
        await persist(c);
      }
      setState(c, "uploading");
      try {
        const { status, data } = await withRetry(attempt(() => api("POST", `/conversations/${cid}/confirm-upload`, {
          chunk_id: c.serverId, file_url: c.fileUrl, timestamp: c.timestamp, source: "PORTAL_AUDIO",
        })), CONFIRM_RETRY_MS, waiting);
        return status === 202 || (data && data.status === "pending_verification") ? "pending_verification" : "uploaded";
      } catch (err) {
        if (round >= 3) throw err;
        c.posted = false; // start over with a new URL
      }
    }
  }

  return { HttpError, api, withRetry, chunkStore: store, uploadChunk };
})();
