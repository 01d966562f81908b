// The landing page: links to the demo project's pages (when the server has one), and a form
// that opens any project's participant or host page.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  $("open-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const page = e.submitter && e.submitter.value === "host" ? "host" : "p";
    location.href = `/${page}/${encodeURIComponent($("project-id").value.trim())}`;
  });
  fetch("/demo.json").then((r) => (r.ok ? r.json() : null)).then((demo) => {
    if (!demo || !demo.project_id) return;
    $("demo-participant").href = `/p/${demo.project_id}`;
    $("demo-host").href = `/host/${demo.project_id}`;
    $("project-id").value = demo.project_id;
    $("demo-links").hidden = false;
  }).catch(() => {});
})();
