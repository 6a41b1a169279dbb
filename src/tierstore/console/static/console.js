// tierstore console: the little script the pages need (no inline script: CSP script-src 'self').
"use strict";
(function () {
  const csrf = () => document.body.dataset.csrf || "";
  // htmx requests carry the session's CSRF token as a header.
  document.addEventListener("htmx:configRequest", (ev) => { ev.detail.headers["X-CSRF-Token"] = csrf(); });
})();
