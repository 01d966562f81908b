// The participant page's list of chunks: what each shows, from the chunks made here and
// the rows of the chunks route. Used by participant.js; no build step.
"use strict";
window.EchoChunkList = (() => {
  const LABELS = {
    queued: "queued", uploading: "uploading", pending_verification: "pending verification",
    uploaded: "uploaded", transcribed: "transcribed", failed: "failed",
  };

  function shownState(status) {
    if (status === "transcribed" || status === "failed" || status === "pending_verification") return status;
    if (status === "issued") return "uploading";
    return "uploaded"; // uploaded, transcribing
  }

  function rows(local, remote) {
    const out = [];
    const confirmedIds = new Set();
    for (const c of local.values()) {
      const row = c.serverId ? remote.get(c.serverId) : null;
      if (c.serverId && c.confirmed) confirmedIds.add(c.serverId);
      out.push({
        key: c.id, timestamp: c.timestamp, label: `Part ${c.seq}`,
        state: row && c.confirmed ? shownState(row.status) : c.state,
        error: (row && row.error) || c.error || "",
      });
    }
    for (const row of remote.values()) {
      if (confirmedIds.has(row.id)) continue;
      if ([...local.values()].some((c) => c.serverId === row.id)) continue;
      const text = row.source === "PORTAL_TEXT";
      out.push({
        key: row.id, timestamp: row.timestamp, label: text ? "Text" : "Part",
        state: shownState(row.status), error: row.error || "",
      });
    }
    out.sort((a, b) => String(a.timestamp).localeCompare(String(b.timestamp)));
    return out;
  }

  // Renders into list (an <ol>) the chunks of local (made here) and remote (the server's).
  function render(list, heading, local, remote) {
    const items = rows(local, remote);
    heading.hidden = items.length === 0;
    list.replaceChildren(...items.map((r, i) => {
      const li = document.createElement("li");
      li.dataset.chunk = r.key;
      li.dataset.state = r.state;
      const name = document.createElement("span");
      name.textContent = r.label.startsWith("Part") ? `Part ${i + 1}` : r.label;
      if (r.error && r.state === "failed") name.textContent += `: ${r.error}`;
      const state = document.createElement("span");
      state.className = "state";
      state.dataset.state = r.state;
      state.textContent = LABELS[r.state] || r.state;
      li.append(name, state);
      return li;
    }));
  }
  return { render };
})();
