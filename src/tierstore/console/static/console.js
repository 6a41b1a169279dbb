// tierstore console: the little script the pages need (no inline script: CSP script-src 'self').
// Uploads go from the browser straight to presigned URLs the console hands out (docs/console.md);
// every text that came from a user is set with textContent, never as HTML.
"use strict";
(function () {
  const csrf = () => document.body.dataset.csrf || "";

  // htmx requests carry the session's CSRF token as a header.
  document.addEventListener("htmx:configRequest", (ev) => { ev.detail.headers["X-CSRF-Token"] = csrf(); });

  async function api(url, doc) {
    const resp = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf() },
      body: JSON.stringify(doc),
    });
    const text = await resp.text();
    let answer = {};
    try { answer = JSON.parse(text); } catch (e) { answer = { error: text.slice(0, 200) }; }
    if (!resp.ok) throw new Error(answer.error || ("HTTP " + resp.status));
    return answer;
  }

  function put(url, body, type, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", url);
      if (type) xhr.setRequestHeader("content-type", type);
      xhr.upload.onprogress = (ev) => onProgress(ev.loaded);
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.getResponseHeader("etag"));
        else reject(new Error("HTTP " + xhr.status + " " + (xhr.responseText.match(/<Code>([^<]*)/) || ["", ""])[1]));
      };
      xhr.onerror = () => reject(new Error("network error"));
      xhr.send(body);
    });
  }

  async function uploadOne(section, file, row) {
    const key = section.dataset.prefix + (file.webkitRelativePath || file.name);
    const type = file.type || "application/octet-stream";
    const bar = row.querySelector("progress");
    const state = row.querySelector(".state");
    row.querySelector(".name").textContent = key;
    bar.max = file.size || 1;
    const base = section.dataset.uploadUrl;
    const plan = await api(base, { key: key, size: file.size, type: type });
    if (plan.url) {
      await put(plan.url, file, type, (n) => { bar.value = n; });
    } else {
      const done = new Array(plan.parts.length).fill(0);
      const etags = new Array(plan.parts.length);
      const show = () => { bar.value = done.reduce((a, b) => a + b, 0); };
      let next = 0;
      const worker = async () => {
        while (next < plan.parts.length) {
          const i = next++;
          const chunk = file.slice(i * plan.part_bytes, Math.min(file.size, (i + 1) * plan.part_bytes));
          etags[i] = await put(plan.parts[i], chunk, null, (n) => { done[i] = n; show(); });
        }
      };
      try {
        await Promise.all([worker(), worker(), worker()]);
        await api(base + "/complete", { key: key, upload_id: plan.upload_id, etags: etags });
      } catch (err) {
        await api(base + "/abort", { key: key, upload_id: plan.upload_id }).catch(() => {});
        throw err;
      }
    }
    bar.value = bar.max;
    state.textContent = "done";
    row.classList.add("done");
  }

  async function uploadAll(section, files) {
    const list = section.querySelector(".progress");
    const jobs = [];
    for (const file of files) {
      const row = document.createElement("li");
      row.innerHTML = '<span class="name"></span> <progress value="0"></progress> <span class="state">uploading</span>';
      list.appendChild(row);
      jobs.push([file, row]);
    }
    section.dataset.state = "uploading";
    let failed = 0;
    for (const [file, row] of jobs) {
      try { await uploadOne(section, file, row); } catch (err) {
        failed++;
        row.classList.add("failed");
        row.querySelector(".state").textContent = "failed: " + err.message;
      }
    }
    section.dataset.state = failed ? "failed" : "done";
    const again = document.createElement("a");
    again.href = window.location.href;
    again.textContent = "Refresh the listing";
    again.className = "refresh";
    list.appendChild(again);
  }

  document.addEventListener("change", (ev) => {
    const input = ev.target;
    const section = input.closest && input.closest("section.upload");
    if (!section || input.type !== "file" || !input.files.length) return;
    uploadAll(section, Array.from(input.files)).finally(() => { input.value = ""; });
  });

  // Share links: select the whole link on focus, for copying.
  document.addEventListener("focusin", (ev) => { if (ev.target.classList && ev.target.classList.contains("link")) ev.target.select(); });

  // Copy buttons (a model's pull command): data-copy names the element whose text is copied.
  document.addEventListener("click", (ev) => {
    const button = ev.target.closest && ev.target.closest("button.copy-button");
    const source = button && document.querySelector(button.dataset.copy);
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent).then(() => { button.textContent = "copied"; });
  });
})();
