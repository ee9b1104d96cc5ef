// The search page of the person re-ID server: plain JS, no build step, no outside assets.
//
// Every call goes through api(): the key travels in the X-API-Key header (never in a
// URL), thumbnails are fetched with the same headers and shown as blob: URLs, and every
// string from the server is put in the page as text (el() never parses HTML).
"use strict";

(() => {
  const KEY_STORE = "reid.apiKey";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const UNIX_SECONDS = 1e8; // timestamps from here on are shown as UTC dates

  const state = {
    key: "",
    model: null,
    stats: null,
    query: null, // {kind: "files", files: [File]} or {kind: "entry", entry}
    response: null,
    thumbs: new Map(), // thumbnail URL -> Promise<blob URL>
    previewUrls: [],
    gallery: { offset: 0, limit: 25, total: 0, filters: {} },
    detail: null,
    view: "grid",
  };

  const $ = (id) => document.getElementById(id);

  // -- DOM helpers (text only: nothing from the server is parsed as HTML) ---------------

  function fill(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on") && typeof value === "function") {
        node.addEventListener(name.slice(2), value);
      } else if (name === "text") {
        node.textContent = String(value);
      } else {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const el = (tag, attrs, ...children) => fill(document.createElement(tag), attrs, children);
  const svg = (tag, attrs, ...children) =>
    fill(document.createElementNS(SVG_NS, tag), attrs, children);

  // -- messages -----------------------------------------------------------------------

  let messageTimer = null;

  function showMessage(text, kind = "error") {
    const box = $("message");
    clearTimeout(messageTimer);
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    box.className = `message ${kind}`;
    box.replaceChildren(
      el("span", { text }),
      el("button", { type: "button", class: "link", "aria-label": "Dismiss", onclick: hideMessage }, "✕"),
    );
    box.hidden = false;
    if (kind !== "error") messageTimer = setTimeout(hideMessage, 6000);
  }

  function hideMessage() {
    $("message").hidden = true;
  }

  function reportError(error) {
    if (error instanceof ApiError && error.status === 401) {
      showMessage(`${error.message}. Enter the API key at the top of the page.`);
    } else {
      showMessage(error.message || String(error));
    }
  }

  // -- the API ------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, type, message) {
      super(message);
      this.status = status;
      this.type = type;
    }
  }

  function headers() {
    return state.key ? { "X-API-Key": state.key } : {};
  }

  async function failure(response) {
    let type = "HTTPError";
    let message = `${response.status} ${response.statusText}`.trim();
    try {
      const body = await response.json();
      if (body && body.error) {
        type = String(body.error.type || type);
        message = String(body.error.message || message);
      }
    } catch (_) {
      // not JSON: keep the status line
    }
    return new ApiError(response.status, type, message);
  }

  async function api(method, path, { params, form } = {}) {
    let url = path;
    if (params) {
      const query = new URLSearchParams();
      for (const [name, value] of Object.entries(params)) {
        if (value !== null && value !== undefined && value !== "") query.set(name, String(value));
      }
      const text = query.toString();
      if (text) url += `?${text}`;
    }
    let response;
    try {
      response = await fetch(url, { method, headers: headers(), body: form, cache: "no-store" });
    } catch (error) {
      throw new ApiError(0, "NetworkError", `the server cannot be reached (${error.message})`);
    }
    if (!response.ok) throw await failure(response);
    return response.json();
  }

  // Thumbnails need the key too when reads do, which an <img src> cannot send.
  function thumbnail(url) {
    if (!url) return Promise.resolve(null);
    if (!state.thumbs.has(url)) {
      const loading = fetch(url, { headers: headers() }).then(async (response) => {
        if (!response.ok) throw await failure(response);
        return URL.createObjectURL(await response.blob());
      });
      loading.catch(() => state.thumbs.delete(url));
      state.thumbs.set(url, loading);
    }
    return state.thumbs.get(url);
  }

  function forgetThumbnail(url) {
    const loading = state.thumbs.get(url);
    if (loading) loading.then((blobUrl) => blobUrl && URL.revokeObjectURL(blobUrl), () => {});
    state.thumbs.delete(url);
  }

  function thumbImage(url, alt, className = "thumb") {
    const frame = el("span", { class: `${className} loading` });
    if (!url) {
      frame.classList.remove("loading");
      frame.append(el("span", { class: "no-image" }, "no image"));
      return frame;
    }
    const img = el("img", { alt, decoding: "async" });
    frame.append(img);
    thumbnail(url).then(
      (blobUrl) => {
        img.src = blobUrl;
        frame.classList.remove("loading");
      },
      () => {
        frame.classList.remove("loading");
        frame.replaceChildren(el("span", { class: "no-image" }, "no image"));
      },
    );
    return frame;
  }

  // -- values: parsing what a person typed, showing what the server sent -------------

  function parseCameras(text, label) {
    const value = text.trim();
    if (!value) return null;
    if (!/^\d+(\s*,\s*\d+)*$/.test(value)) {
      throw new Error(`${label}: use camera numbers separated by commas, e.g. 0,2`);
    }
    return value.split(",").map((part) => Number(part.trim()));
  }

  function parseTime(text, label) {
    let value = text.trim();
    if (!value) return null;
    if (/^-?\d+(\.\d+)?$/.test(value)) return Number(value);
    if (/^\d{4}-\d\d-\d\d( |T|$)/.test(value) && !/(Z|[+-]\d\d:?\d\d)$/.test(value)) {
      value = value.replace(" ", "T");
      if (/^\d{4}-\d\d-\d\d$/.test(value)) value += "T00:00";
      value += "Z"; // a date/time without a zone is read as UTC, as it is shown
    }
    const millis = Date.parse(value);
    if (Number.isNaN(millis)) {
      throw new Error(`${label}: give seconds or a date/time such as 2024-05-01 12:00`);
    }
    return millis / 1000;
  }

  function parseNumber(text, label, { min, max, integer } = {}) {
    const value = text.trim();
    if (!value) return null;
    const number = Number(value);
    if (!Number.isFinite(number) || (integer && !Number.isInteger(number))) {
      throw new Error(`${label}: not ${integer ? "a whole number" : "a number"}: ${value}`);
    }
    if ((min !== undefined && number < min) || (max !== undefined && number > max)) {
      throw new Error(`${label}: must be between ${min} and ${max}`);
    }
    return number;
  }

  function isUnix(t) {
    return t >= UNIX_SECONDS;
  }

  function formatTime(t) {
    if (t === null || t === undefined) return "no time";
    if (isUnix(t)) return `${new Date(t * 1000).toISOString().slice(0, 19).replace("T", " ")} UTC`;
    return `${Number(t).toFixed(1)} s`;
  }

  function formatTick(t, step) {
    if (!isUnix(t)) return step >= 1 ? `${Math.round(t)} s` : `${t.toFixed(1)} s`;
    const iso = new Date(t * 1000).toISOString();
    if (step >= 86400) return iso.slice(0, 10);
    return step >= 60 ? iso.slice(11, 16) : iso.slice(11, 19);
  }

  // Round tick positions (every 1, 2, 5, 10, 15, 30 s, 1, 2, 5, 10, 15, 30 min, 1, 2, 3, 6,
  // 12 h, days...) so that about six fit between t0 and t1.
  function ticksBetween(t0, t1) {
    const steps = [
      0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
      3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800,
    ];
    const span = t1 - t0;
    let step = steps.find((s) => span / s <= 7);
    if (step === undefined) step = Math.pow(10, Math.ceil(Math.log10(span / 7)));
    const ticks = [];
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) ticks.push(t);
    return { ticks, step };
  }

  const formatCamera = (c) => (c === null || c === undefined ? "camera ?" : `camera ${c}`);
  const formatScore = (s) => Number(s).toFixed(3);

  function formatBox(box) {
    if (!box) return "—";
    const [x, y, w, h] = box.map((v) => Number(v).toFixed(0));
    return `x ${x}, y ${y}, ${w} × ${h}`;
  }

  // -- the key ------------------------------------------------------------------------

  function setupKey() {
    try {
      const kept = sessionStorage.getItem(KEY_STORE);
      if (kept) {
        state.key = kept;
        $("api-key").value = kept;
        $("key-remember").checked = true;
      }
    } catch (_) {
      // storage disabled: the key stays in memory only
    }
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.key = $("api-key").value.trim();
      try {
        if ($("key-remember").checked && state.key) sessionStorage.setItem(KEY_STORE, state.key);
        else sessionStorage.removeItem(KEY_STORE);
      } catch (_) {
        // storage disabled
      }
      state.thumbs.clear();
      hideMessage();
      loadServer().then((ok) => ok && showMessage(state.key ? "Key in use." : "No key in use.", "info"));
    });
  }

  // -- server information -------------------------------------------------------------

  async function loadServer() {
    try {
      [state.model, state.stats] = await Promise.all([
        api("GET", "/v1/model"),
        api("GET", "/v1/gallery/stats"),
      ]);
    } catch (error) {
      $("server-info").textContent =
        error.status === 401 || error.status === 403
          ? "This server needs an API key for reads."
          : `Not connected: ${error.message}`;
      reportError(error);
      return false;
    }
    renderServerInfo();
    const limits = state.model.limits || {};
    if (limits.max_k) $("k").max = String(limits.max_k);
    await loadGallery();
    return true;
  }

  function renderServerInfo() {
    const stats = state.stats || {};
    const cameras = Object.keys(stats.cameras || {}).length;
    const auth = (state.model && state.model.auth) || {};
    const model = (state.model && state.model.model) || {};
    const runtime = (state.model && state.model.runtime) || {};
    const parts = [
      `Model ${model.name || "?"}${runtime.runtime ? ` on ${runtime.runtime} (${runtime.device || "?"})` : ""}`,
      `gallery of ${stats.size ?? "?"} entries on ${cameras} camera${cameras === 1 ? "" : "s"}`,
      auth.reads_need_key ? "reads need a key" : "reads open",
      auth.writes_need_key ? "writes need a key" : "writes open",
    ];
    $("server-info").textContent = parts.join(" · ");
  }

  async function refreshStats() {
    try {
      state.stats = await api("GET", "/v1/gallery/stats");
      renderServerInfo();
    } catch (_) {
      // the info line keeps its last value
    }
  }

  // -- the query ----------------------------------------------------------------------

  function setFiles(fileList) {
    const files = Array.from(fileList).filter((f) => f.type.startsWith("image/") || !f.type);
    if (!files.length) {
      showMessage("Those are not images: choose JPEG or PNG crops.");
      return;
    }
    const max = state.model && state.model.limits && state.model.limits.max_images;
    if (max && files.length > max) {
      showMessage(`At most ${max} images per search; ${files.length} were given.`);
      return;
    }
    state.query = { kind: "files", files };
    renderQuery();
  }

  function renderQuery() {
    for (const url of state.previewUrls) URL.revokeObjectURL(url);
    state.previewUrls = [];
    const box = $("query-previews");
    const query = state.query;
    const uploads = !query || query.kind === "files";
    $("query-cameras").disabled = !uploads;
    $("query-cameras-help").textContent = uploads
      ? "camera of the uploaded crops"
      : "the entry's own camera is the query camera";
    if (!query) {
      box.replaceChildren();
      return;
    }
    if (query.kind === "files") {
      box.replaceChildren(
        ...query.files.map((file, i) => {
          const url = URL.createObjectURL(file);
          state.previewUrls.push(url);
          return el(
            "figure",
            { class: "preview" },
            el("img", { src: url, alt: `query image ${i + 1}` }),
            el("figcaption", {}, file.name),
          );
        }),
      );
    } else {
      const entry = query.entry;
      box.replaceChildren(
        el(
          "figure",
          { class: "preview" },
          thumbImage(entry.thumbnail_url, `gallery entry ${entry.id}`, "preview-thumb"),
          el("figcaption", {}, `entry ${entry.id} · ${formatCamera(entry.camera)}`),
        ),
      );
    }
  }

  function searchFields() {
    const limits = (state.model && state.model.limits) || {};
    const form = new FormData();
    const k = parseNumber($("k").value, "Matches (k)", {
      min: 1,
      max: limits.max_k || 1e9,
      integer: true,
    });
    form.set("k", String(k ?? 10));
    const cameras = parseCameras($("cameras").value, "Only cameras");
    if (cameras) form.set("cameras", cameras.join(","));
    const excluded = parseCameras($("exclude-cameras").value, "Exclude cameras");
    if (excluded) form.set("exclude_cameras", excluded.join(","));
    const from = parseTime($("time-from").value, "From");
    const to = parseTime($("time-to").value, "To");
    if (from !== null && to !== null && from > to) throw new Error("From is after To");
    if (from !== null) form.set("time_from", String(from));
    if (to !== null) form.set("time_to", String(to));
    const minScore = parseNumber($("min-score").value, "Minimum score", { min: -1, max: 1 });
    if (minScore !== null) form.set("min_score", String(minScore));
    if ($("exclude-same").checked) form.set("exclude_same_camera", "true");
    return form;
  }

  async function runSearch() {
    const query = state.query;
    if (!query) {
      showMessage("Choose or drop a crop first, or pick a gallery entry (Find this person elsewhere).");
      return;
    }
    let form;
    let path = "/v1/search";
    try {
      form = searchFields();
      if (query.kind === "files") {
        const cameras = parseCameras($("query-cameras").value, "Query camera");
        if (cameras) {
          const count = query.files.length;
          if (cameras.length !== 1 && cameras.length !== count) {
            throw new Error(`Query camera: give one camera, or one per image (${count})`);
          }
          const perImage = cameras.length === 1 ? Array(count).fill(cameras[0]) : cameras;
          form.set("query_cameras", perImage.join(","));
        } else if (form.has("exclude_same_camera")) {
          throw new Error("To exclude the query's camera, enter the query camera.");
        }
        for (const file of query.files) form.append("images", file, file.name);
      } else {
        path = `/v1/search/by-entry/${encodeURIComponent(query.entry.id)}`;
      }
    } catch (error) {
      showMessage(error.message);
      return;
    }
    const button = $("search-button");
    button.disabled = true;
    button.textContent = "Searching…";
    $("results").setAttribute("aria-busy", "true");
    try {
      state.response = await api("POST", path, { form });
      hideMessage();
      renderResults();
    } catch (error) {
      reportError(error);
    } finally {
      button.disabled = false;
      button.textContent = "Search";
      $("results").removeAttribute("aria-busy");
    }
  }

  function findElsewhere(item) {
    state.query = { kind: "entry", entry: item };
    renderQuery();
    runSearch().then(() => $("results").scrollIntoView({ behavior: "smooth", block: "start" }));
  }

  // -- results ------------------------------------------------------------------------

  function matchCard(match, rank) {
    const label =
      `rank ${rank}, entry ${match.id}, score ${formatScore(match.score)}, ` +
      `${formatCamera(match.camera)}, track ${match.track ?? "none"}, ${formatTime(match.timestamp)}`;
    return el(
      "li",
      { class: "card", "data-id": match.id, "data-camera": match.camera ?? "" },
      el(
        "button",
        { type: "button", class: "card-main", "aria-label": `${label}: details`, onclick: () => openDetail(match) },
        thumbImage(match.thumbnail_url, `entry ${match.id}`),
        el("span", { class: "rank" }, `#${rank}`),
        el("span", { class: "score" }, formatScore(match.score)),
        el("span", { class: "meta" }, `${formatCamera(match.camera)} · track ${match.track ?? "—"}`),
        el("span", { class: "meta time" }, formatTime(match.timestamp)),
      ),
      el(
        "button",
        { type: "button", class: "card-action", "aria-label": `find entry ${match.id} elsewhere`, onclick: () => findElsewhere(match) },
        "Find elsewhere",
      ),
    );
  }

  function renderResults() {
    const response = state.response;
    const section = $("results");
    section.hidden = false;
    const query = state.query;
    const what =
      query.kind === "entry"
        ? `gallery entry ${query.entry.id} (${formatCamera(query.entry.camera)}; the entry itself is left out)`
        : `${query.files.length} uploaded image${query.files.length === 1 ? "" : "s"}`;
    const total = response.results.reduce((n, r) => n + r.matches.length, 0);
    $("query-summary").textContent =
      `${total} match${total === 1 ? "" : "es"} for ${what} · searched ${response.gallery_size ?? "?"} entries` +
      (response.took_ms !== null && response.took_ms !== undefined ? ` in ${response.took_ms.toFixed(0)} ms` : "");
    const groups = response.results.map((result) => {
      const title =
        response.results.length > 1
          ? el("h3", {}, `Query ${result.query_index + 1}`, result.query_camera !== null && result.query_camera !== undefined ? ` · ${formatCamera(result.query_camera)}` : "")
          : null;
      const body = result.matches.length
        ? el("ol", { class: "grid", "aria-label": `matches of query ${result.query_index + 1}` }, result.matches.map((m, i) => matchCard(m, i + 1)))
        : el("p", { class: "muted" }, "No match passes the filters.");
      return el("div", { class: "result-group" }, title, body);
    });
    $("view-grid").replaceChildren(...groups);
    renderTimeline();
  }

  // -- the sighting timeline ------------------------------------------------------------

  function sightings() {
    const best = new Map(); // one point per entry: its best score over the queries
    for (const result of state.response ? state.response.results : []) {
      for (const match of result.matches) {
        const seen = best.get(match.id);
        if (!seen || match.score > seen.score) best.set(match.id, match);
      }
    }
    return [...best.values()];
  }

  function scoreColour(score, low) {
    const t = Math.max(0, Math.min(1, (score - low) / Math.max(1e-6, 1 - low)));
    return `hsl(${Math.round(28 + 112 * t)}, 72%, ${Math.round(50 - 12 * t)}%)`;
  }

  function renderTimeline() {
    const box = $("timeline");
    const note = $("timeline-note");
    let threshold;
    try {
      threshold = parseNumber($("timeline-threshold").value, "Threshold", { min: -1, max: 1 }) ?? -1;
    } catch (error) {
      note.textContent = error.message;
      return;
    }
    const all = sightings();
    const above = all.filter((m) => m.score >= threshold);
    const timed = above.filter((m) => m.timestamp !== null && m.timestamp !== undefined);
    const untimed = above.length - timed.length;
    const notes = [
      `${timed.length} sighting${timed.length === 1 ? "" : "s"} with score ≥ ${threshold}`,
      all.length - above.length ? `${all.length - above.length} below the threshold hidden` : null,
      untimed ? `${untimed} without a timestamp not placed` : null,
      "colour: score, orange (lowest shown) to green (1.0)",
      "the line joins the sightings in time order",
    ];
    note.textContent = notes.filter(Boolean).join(" · ");
    if (!timed.length) {
      box.replaceChildren(el("p", { class: "muted" }, "No sighting to place on the time axis."));
      return;
    }
    // One row per camera of the gallery, so "never seen on camera 2" shows too.
    const cameraSet = new Set(Object.keys((state.stats && state.stats.cameras) || {}).map(Number));
    for (const m of timed) cameraSet.add(m.camera ?? -1);
    const cameras = [...cameraSet].sort((a, b) => a - b);
    let t0 = Math.min(...timed.map((m) => m.timestamp));
    let t1 = Math.max(...timed.map((m) => m.timestamp));
    if (t1 - t0 < 1) {
      t0 -= 30;
      t1 += 30;
    }
    const pad = (t1 - t0) * 0.04;
    t0 -= pad;
    t1 += pad;

    const W = 960;
    const left = 150;
    const right = 24;
    const rowH = 44;
    const top = 16;
    const H = top + rowH * cameras.length + 52;
    const x = (t) => left + ((t - t0) / (t1 - t0)) * (W - left - right);
    const y = (camera) => top + rowH * cameras.indexOf(camera) + rowH / 2;

    const chart = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      class: "timeline-svg",
      role: "group",
      "aria-label": `Sightings per camera over time, ${timed.length} matches`,
    });
    cameras.forEach((camera, i) => {
      const count = timed.filter((m) => (m.camera ?? -1) === camera).length;
      chart.append(
        svg(
          "g",
          { class: "tl-row", "data-camera": camera },
          svg("rect", { x: 0, y: top + rowH * i, width: W, height: rowH, class: i % 2 ? "row-odd" : "row-even" }),
          svg("text", { x: 12, y: y(camera) + 5, class: "row-label" }, camera === -1 ? "camera ?" : `camera ${camera}`),
          svg("text", { x: left - 12, y: y(camera) + 5, class: "row-count", "text-anchor": "end" }, `${count} seen`),
          svg("line", { x1: left, x2: W - right, y1: y(camera), y2: y(camera), class: "row-line" }),
        ),
      );
    });
    const axisY = top + rowH * cameras.length;
    const axis = svg("g", { class: "axis" }, svg("line", { x1: left, x2: W - right, y1: axisY, y2: axisY }));
    const { ticks, step } = ticksBetween(t0, t1);
    for (const t of ticks) {
      axis.append(
        svg("line", { x1: x(t), x2: x(t), y1: top, y2: axisY + 5, class: "tick" }),
        svg("text", { x: x(t), y: axisY + 22, "text-anchor": "middle" }, formatTick(t, step)),
      );
    }
    const span = isUnix(t0)
      ? `${formatTime(t0 + pad)} to ${formatTime(t1 - pad)}`
      : `${formatTick(t0 + pad, 1)} to ${formatTick(t1 - pad, 1)}`;
    axis.append(svg("text", { x: left, y: axisY + 42, class: "axis-caption" }, `time: ${span}`));
    chart.append(axis);

    const ordered = [...timed].sort((a, b) => a.timestamp - b.timestamp);
    if (ordered.length > 1) {
      const points = ordered.map((m) => `${x(m.timestamp).toFixed(1)},${y(m.camera ?? -1).toFixed(1)}`);
      chart.append(svg("polyline", { points: points.join(" "), class: "path" }));
    }
    const low = Math.max(-1, Math.min(threshold, ...timed.map((m) => m.score)));
    for (const m of ordered) {
      const label = `entry ${m.id}, ${formatCamera(m.camera)}, ${formatTime(m.timestamp)}, score ${formatScore(m.score)}`;
      const open = () => openDetail(m);
      chart.append(
        svg(
          "circle",
          {
            cx: x(m.timestamp).toFixed(1),
            cy: y(m.camera ?? -1).toFixed(1),
            r: 8,
            fill: scoreColour(m.score, low),
            class: "sighting",
            tabindex: 0,
            role: "button",
            "aria-label": label,
            "data-id": m.id,
            onclick: open,
            onkeydown: (event) => {
              if (event.key === "Enter" || event.key === " ") {
                event.preventDefault();
                open();
              }
            },
          },
          svg("title", {}, label),
        ),
      );
    }
    box.replaceChildren(chart);
  }

  function selectView(view) {
    state.view = view;
    for (const [name, tab, panel] of [
      ["grid", $("tab-grid"), $("view-grid")],
      ["timeline", $("tab-timeline"), $("view-timeline")],
    ]) {
      const on = name === view;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      panel.hidden = !on;
    }
  }

  function setupTabs() {
    $("tab-grid").addEventListener("click", () => selectView("grid"));
    $("tab-timeline").addEventListener("click", () => selectView("timeline"));
    for (const tab of [$("tab-grid"), $("tab-timeline")]) {
      tab.addEventListener("keydown", (event) => {
        if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
          const next = state.view === "grid" ? "timeline" : "grid";
          selectView(next);
          $(`tab-${next}`).focus();
        }
      });
    }
    $("timeline-threshold").addEventListener("input", renderTimeline);
  }

  // -- the detail dialog ----------------------------------------------------------------

  function detailFields(item) {
    const rows = [["Entry id", String(item.id)]];
    if (item.score !== undefined) rows.push(["Score", formatScore(item.score)]);
    rows.push(
      ["Camera", item.camera ?? "—"],
      ["Time", formatTime(item.timestamp)],
      ["Track", item.track ?? "—"],
      ["Box (x, y, w, h)", formatBox(item.box)],
      ["Source", item.source || "—"],
    );
    if (item.created !== undefined) rows.push(["Added", formatTime(item.created)]);
    if (item.extra && Object.keys(item.extra).length) rows.push(["Extra", JSON.stringify(item.extra)]);
    return rows.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, String(value))]);
  }

  function openDetail(item) {
    state.detail = item;
    $("detail-title").textContent = `Entry ${item.id}`;
    const img = $("detail-img");
    img.removeAttribute("src");
    img.alt = `thumbnail of entry ${item.id}`;
    thumbnail(item.thumbnail_url).then(
      (url) => {
        if (state.detail === item && url) img.src = url;
      },
      () => {},
    );
    $("detail-fields").replaceChildren(...detailFields(item));
    const dialog = $("detail");
    if (!dialog.open) dialog.showModal();
    if (item.created === undefined) {
      // a match: the entry itself has the rest (when it was added, extra data)
      api("GET", `/v1/gallery/${encodeURIComponent(item.id)}`).then(
        (entry) => {
          if (state.detail === item) $("detail-fields").replaceChildren(...detailFields({ ...entry, score: item.score }));
        },
        () => {},
      );
    }
  }

  function setupDetail() {
    $("detail-find").addEventListener("click", () => {
      const item = state.detail;
      $("detail").close();
      if (item) findElsewhere(item);
    });
    $("detail-delete").addEventListener("click", () => {
      const item = state.detail;
      if (item) deleteEntry(item).then((done) => done && $("detail").close());
    });
  }

  // -- the gallery browser ------------------------------------------------------------

  function galleryCard(entry) {
    return el(
      "li",
      { class: "card", "data-id": entry.id, "data-camera": entry.camera ?? "" },
      el(
        "button",
        {
          type: "button",
          class: "card-main",
          "aria-label": `entry ${entry.id}, ${formatCamera(entry.camera)}, track ${entry.track ?? "none"}, ${formatTime(entry.timestamp)}: details`,
          onclick: () => openDetail(entry),
        },
        thumbImage(entry.thumbnail_url, `entry ${entry.id}`),
        el("span", { class: "rank" }, `id ${entry.id}`),
        el("span", { class: "meta" }, `${formatCamera(entry.camera)} · track ${entry.track ?? "—"}`),
        el("span", { class: "meta time" }, formatTime(entry.timestamp)),
      ),
      el(
        "span",
        { class: "card-actions" },
        el("button", { type: "button", class: "card-action", "aria-label": `find entry ${entry.id} elsewhere`, onclick: () => findElsewhere(entry) }, "Find elsewhere"),
        el("button", { type: "button", class: "card-action danger", "aria-label": `delete entry ${entry.id}`, onclick: () => deleteEntry(entry) }, "Delete"),
      ),
    );
  }

  async function loadGallery() {
    const g = state.gallery;
    try {
      const page = await api("GET", "/v1/gallery", {
        params: { offset: g.offset, limit: g.limit, ...g.filters },
      });
      g.total = page.total;
      if (!page.entries.length && g.offset > 0 && page.total > 0) {
        g.offset = Math.max(0, Math.floor((page.total - 1) / g.limit) * g.limit);
        return loadGallery();
      }
      const first = page.entries.length ? g.offset + 1 : 0;
      $("g-range").textContent = `${first}–${g.offset + page.entries.length} of ${page.total}`;
      $("g-prev").disabled = g.offset <= 0;
      $("g-next").disabled = g.offset + g.limit >= page.total;
      $("gallery-grid").replaceChildren(
        page.entries.length
          ? el("ol", { class: "grid", "aria-label": "gallery entries" }, page.entries.map(galleryCard))
          : el("p", { class: "muted" }, "No entry matches these filters."),
      );
    } catch (error) {
      reportError(error);
    }
  }

  function setupGallery() {
    $("gallery-form").addEventListener("submit", (event) => {
      event.preventDefault();
      try {
        const cameras = parseCameras($("g-cameras").value, "Cameras");
        const from = parseTime($("g-time-from").value, "From");
        const to = parseTime($("g-time-to").value, "To");
        if (from !== null && to !== null && from > to) throw new Error("From is after To");
        state.gallery.filters = {
          cameras: cameras ? cameras.join(",") : null,
          time_from: from,
          time_to: to,
        };
      } catch (error) {
        showMessage(error.message);
        return;
      }
      state.gallery.limit = Number($("g-page-size").value);
      state.gallery.offset = 0;
      loadGallery();
    });
    $("g-page-size").addEventListener("change", () => {
      state.gallery.limit = Number($("g-page-size").value);
      state.gallery.offset = 0;
      loadGallery();
    });
    $("g-prev").addEventListener("click", () => {
      state.gallery.offset = Math.max(0, state.gallery.offset - state.gallery.limit);
      loadGallery();
    });
    $("g-next").addEventListener("click", () => {
      state.gallery.offset += state.gallery.limit;
      loadGallery();
    });
  }

  async function deleteEntry(entry) {
    if (!window.confirm(`Delete gallery entry ${entry.id} (${formatCamera(entry.camera)}, ${formatTime(entry.timestamp)})? This cannot be undone.`)) {
      return false;
    }
    try {
      await api("DELETE", `/v1/gallery/${encodeURIComponent(entry.id)}`);
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        showMessage(`${error.message}. Deleting needs the write key.`);
      } else {
        reportError(error);
      }
      return false;
    }
    forgetThumbnail(entry.thumbnail_url);
    for (const card of document.querySelectorAll(`#view-grid .card[data-id="${Number(entry.id)}"]`)) {
      card.classList.add("deleted");
      card.append(el("span", { class: "deleted-note" }, "deleted"));
      for (const button of card.querySelectorAll("button")) button.disabled = true;
    }
    showMessage(`Deleted entry ${entry.id}.`, "info");
    await Promise.all([loadGallery(), refreshStats()]);
    return true;
  }

  // -- wiring -------------------------------------------------------------------------

  function setupSearch() {
    const zone = $("drop-zone");
    $("files").addEventListener("change", (event) => {
      if (event.target.files.length) setFiles(event.target.files);
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      if (event.dataTransfer && event.dataTransfer.files.length) setFiles(event.dataTransfer.files);
    });
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      runSearch();
    });
    $("clear-button").addEventListener("click", () => {
      state.query = null;
      $("files").value = "";
      renderQuery();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupKey();
    setupSearch();
    setupTabs();
    setupDetail();
    setupGallery();
    state.gallery.limit = Number($("g-page-size").value);
    loadServer().then(() => document.body.setAttribute("data-ready", "true"));
  });
})();
