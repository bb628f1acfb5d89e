// Shared by the gallery page (index.html) and the photo-library page (library.html): the bearer token, API calls,
// the status line, images fetched behind a token, the drop zone, and the start-up read of /healthz. A page defines
// its searches and calls startPage(page) once.
"use strict";
const $ = (id) => document.getElementById(id);
let authRequired = false;
let blobUrls = [];

function token() {
  const typed = $("token").value.trim();
  if (typed) sessionStorage.setItem("ernievil2-token", typed);
  return typed || sessionStorage.getItem("ernievil2-token") || "";
}
function authHeaders() {
  return authRequired && token() ? { "Authorization": "Bearer " + token() } : {};
}
function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}
async function api(url, options) {
  const response = await fetch(url, Object.assign({ headers: authHeaders() }, options || {}));
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const reason = body && body.error ? body.error : ("HTTP " + response.status);
    throw new Error(reason);
  }
  return body;
}
async function imageSource(url) {
  if (!authRequired) return url;
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) throw new Error("HTTP " + response.status);
  const blobUrl = URL.createObjectURL(await response.blob());
  blobUrls.push(blobUrl);
  return blobUrl;
}
function releaseImages() {
  blobUrls.forEach((u) => URL.revokeObjectURL(u));
  blobUrls = [];
}
function showQueryImage(file) {
  const preview = $("query-image");
  if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
  preview.dataset.url = URL.createObjectURL(file);
  preview.src = preview.dataset.url;
  $("query-preview").style.display = "flex";
}

// page: { searchText(event), searchImage(file), describe(health) -> the info line, ready(health) (optional, async:
// what the page loads before it counts as ready) }.
function startPage(page) {
  async function loadInfo() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (fragment.get("token")) {
      $("token").value = fragment.get("token");
      history.replaceState(null, "", location.pathname + location.search);  // drop the token, keep ?q=
    }
    try {
      const health = await (await fetch("/healthz", { headers: authHeaders() })).json();
      authRequired = !!health.auth_required;
      $("token-row").style.display = authRequired ? "flex" : "none";
      if (health.gallery_size !== undefined) {
        $("info").textContent = page.describe(health);
        $("synthetic").style.display = health.synthetic_weights ? "block" : "none";
        if (page.ready) await page.ready(health);
      } else {
        $("info").textContent = "服务需要访问令牌";
      }
      document.body.dataset.ready = "1";
      const asked = new URLSearchParams(location.search).get("q");  // /?q=... opens the page with that search
      if (asked && asked.trim() && health.gallery_size !== undefined && !$("q").dataset.started) {
        $("q").dataset.started = "1";
        $("q").value = asked;
        page.searchText();
      }
    } catch (e) { $("info").textContent = "无法连接服务：" + e.message; }
  }
  $("search-form").addEventListener("submit", page.searchText);
  $("file").addEventListener("change", () => page.searchImage($("file").files[0]));
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((name) => drop.addEventListener(name, (e) => {
    e.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => page.searchImage(e.dataTransfer.files[0]));
  $("token").addEventListener("change", loadInfo);
  loadInfo();
}
