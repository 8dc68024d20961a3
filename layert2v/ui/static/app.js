// layert2v ui: one page, no framework, nothing fetched from outside this server.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { model: null, run: null, job: null, recomp: null, compositeSeq: 0 };
const player = { frame: 0, frames: 1, fps: 8, playing: true, views: new Map(), timer: null };

// ------------------------------------------------------------------ messages and requests
function say(text, kind = "info") {
  const box = $("#message");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let text = `${response.status} ${response.statusText}`;
    try { text = (await response.json()).error || text; } catch (e) { /* not JSON */ }
    throw new Error(text);
  }
  return response;
}

const sizeText = (n) => n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MB` : `${(n / 1024).toFixed(0)} KB`;

const postJSON = (path, body) => api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

// ------------------------------------------------------------------ tabs
function showTab(name) {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== `panel-${name}`;
}
for (const button of document.querySelectorAll("#tabs button")) {
  button.addEventListener("click", () => { state.userTab = true; showTab(button.dataset.tab); });
}

// ------------------------------------------------------------------ generate panel
function fgRows() { return [...document.querySelectorAll("#fg-rows input")]; }

function updateFgLimit() {
  const max = state.model ? state.model.max_foregrounds : 1;
  const n = fgRows().length;
  $("#add-fg").disabled = n >= max;
  $("#fg-limit").textContent = n >= max ? `this model takes at most ${max} foreground layer(s)`
    : "blank rows: the objects named before “over” in the full prompt";
  for (const button of document.querySelectorAll("#fg-rows .remove")) button.disabled = n <= 1;
}

function addFgRow(text = "") {
  const max = state.model ? state.model.max_foregrounds : 1;
  if (fgRows().length >= max) { updateFgLimit(); return; }
  const row = document.createElement("div");
  row.className = "fg-row";
  const input = document.createElement("input");
  input.className = "fg";
  input.value = text;
  input.placeholder = `foreground ${fgRows().length + 1}`;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "remove";
  remove.textContent = "remove";
  remove.addEventListener("click", () => { row.remove(); updateFgLimit(); });
  row.append(input, remove);
  $("#fg-rows").append(row);
  updateFgLimit();
}
$("#add-fg").addEventListener("click", () => addFgRow());

async function loadModel() {
  try {
    const m = await (await api("/api/model")).json();
    state.model = m;
    $("#model-line").textContent = `model ${m.model_id} (${m.path}): up to ${m.max_foregrounds} foreground(s), ` +
      `frames ${m.temporal}k+1, sizes in multiples of ${m.spatial}; runs saved under ${m.out}`;
    $("#steps").value = m.steps;
    $("#guidance").value = m.guidance;
    $("#frames").value = m.frames;
    $("#frames").step = m.temporal;
    $("#width").value = m.width;
    $("#height").value = m.height;
    $("#width").step = $("#height").step = m.spatial;
    if (m.load_error) say(m.load_error, "error");
  } catch (e) {
    say(`could not read the model: ${e.message}`, "error");
  }
  if (!fgRows().length) addFgRow();
  updateFgLimit();
}

$("#generate").addEventListener("click", async () => {
  say("");
  const body = {
    prompt: $("#prompt").value, background: $("#background").value, foregrounds: fgRows().map((i) => i.value),
    seed: $("#seed").value, steps: $("#steps").value, guidance: $("#guidance").value, frames: $("#frames").value,
    width: $("#width").value, height: $("#height").value,
  };
  try {
    const job = await (await postJSON("/api/generate", body)).json();
    $("#progress").value = 0;
    $("#progress").dataset.seen = "";
    followJob(job.id);
  } catch (e) {
    say(e.message, "error");
  }
});

function showJob(job) {
  const bar = $("#progress");
  bar.value = job.steps ? job.step / job.steps : 0;
  if (job.step) {
    const seen = bar.dataset.seen ? bar.dataset.seen.split(",") : [];
    if (seen[seen.length - 1] !== String(job.step)) bar.dataset.seen = [...seen, job.step].join(",");
  }
  const words = {
    queued: `waiting in the queue: ${job.ahead} generation(s) ahead of this one`,
    loading: "loading the model…",
    denoising: `denoising: step ${job.step} / ${job.steps}`,
    saving: `step ${job.step} / ${job.steps}; saving the layers…`,
    done: `done: step ${job.step} / ${job.steps}`,
    error: "failed",
  };
  $("#job-status").textContent = words[job.state] || job.state;
  $("#job-status").dataset.state = job.state;
}

async function followJob(id) {
  state.job = id;
  while (state.job === id) {
    let job;
    try {
      job = await (await api(`/api/jobs/${id}`)).json();
    } catch (e) {
      say(`lost track of the generation: ${e.message}`, "error");
      return;
    }
    showJob(job);
    if (job.state === "done") { await loadRun(job.run, "layers"); return; }
    if (job.state === "error") { say(`generation failed: ${job.error}`, "error"); return; }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

// ------------------------------------------------------------------ the shared player
function drawView(view) {
  const ctx = view.canvas.getContext("2d");
  ctx.clearRect(0, 0, view.w, view.h);
  if (!view.bitmap) return;
  const f = Math.min(player.frame, player.frames - 1);
  const col = f % view.cols, row = Math.floor(f / view.cols);
  ctx.drawImage(view.bitmap, col * view.w, row * view.h, view.w, view.h, 0, 0, view.w, view.h);
}

function drawAll() {
  for (const view of player.views.values()) drawView(view);
  $("#frame").value = player.frame;
  $("#frame-label").textContent = `frame ${player.frame + 1} / ${player.frames}`;
}

function setPlaying(playing) {
  player.playing = playing;
  clearInterval(player.timer);
  if (playing) {
    player.timer = setInterval(() => { player.frame = (player.frame + 1) % player.frames; drawAll(); },
      1000 / player.fps);
  }
  for (const b of [$("#play"), ...document.querySelectorAll(".play-mirror")]) b.textContent = playing ? "Pause" : "Play";
}
for (const b of [$("#play"), ...document.querySelectorAll(".play-mirror")]) {
  b.addEventListener("click", () => setPlaying(!player.playing));
}
$("#frame").addEventListener("input", () => {
  setPlaying(false);
  player.frame = Number($("#frame").value);
  drawAll();
});

async function bitmapOf(response) { return createImageBitmap(await response.blob()); }

function makeView(key, canvas, run) {
  canvas.width = run.size[0];
  canvas.height = run.size[1];
  const view = { canvas, bitmap: null, cols: run.sprite_columns, w: run.size[0], h: run.size[1] };
  player.views.set(key, view);
  return view;
}

// ------------------------------------------------------------------ layers panel
async function loadRun(id, tab) {
  let run;
  try {
    run = await (await api(`/api/runs/${id}`)).json();
  } catch (e) {
    say(e.message, "error");
    return;
  }
  state.run = run;
  player.views.clear();
  player.frames = run.frames;
  player.fps = run.fps;
  player.frame = 0;
  $("#frame").max = run.frames - 1;
  $("#run-name").textContent = run.name;
  $("#run-path").textContent = `${run.origin === "generated" ? "generated into" : "opened from"} ${run.path}`;
  $("#manifest").textContent = JSON.stringify(run.manifest, null, 2);

  const views = $("#layer-views");
  views.replaceChildren();
  delete views.dataset.run;
  const k = run.num_foregrounds;
  const layers = [["full", "full video"], ["background", "background"]];
  for (let i = 1; i <= k; i++) layers.push([`foreground_${i}`, `foreground ${i}: ${run.manifest.prompts?.foregrounds?.[i - 1] ?? ""}`]);
  for (let i = 1; i <= k; i++) layers.push([`alpha_${i}`, `alpha ${i}`]);
  const loads = layers.map(async ([layer, caption]) => {
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.dataset.layer = layer;
    if (layer.startsWith("foreground_")) canvas.className = "checker";
    const label = document.createElement("figcaption");
    label.textContent = caption;
    figure.append(canvas, label);
    views.append(figure);
    const view = makeView(layer, canvas, run);
    view.bitmap = await bitmapOf(await api(`/api/runs/${id}/sprite/${layer}.png`));
  });

  $("#preview").src = run.files.includes("preview.png") ? `/api/runs/${id}/files/preview.png` : "";
  const list = $("#downloads");
  list.replaceChildren(...run.files.map((name) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = `/api/runs/${id}/files/${encodeURIComponent(name)}`;
    link.download = name;
    link.textContent = name;
    item.append(link);
    return item;
  }));
  $("#zip").href = `/api/runs/${id}/zip`;

  setupRecomposite(run);
  try {
    await Promise.all(loads);
  } catch (e) {
    say(`could not load the layers: ${e.message}`, "error");
    return;
  }
  views.dataset.run = id;
  drawAll();
  setPlaying(player.playing);
  if (tab) showTab(tab);
  refreshRuns();
  await updateComposite();
}

// ------------------------------------------------------------------ recomposite panel
function setupRecomposite(run) {
  const k = run.num_foregrounds;
  state.recomp = {
    order: Array.from({ length: k }, (_, i) => i + 1), // bottom first
    layers: Object.fromEntries(Array.from({ length: k }, (_, i) => [i + 1, { visible: true, opacity: 1, dx: 0, dy: 0 }])),
    background: null,
  };
  $("#bg-status").textContent = "original background";
  $("#bg-file").value = "";
  makeView("composite", $("#composite"), run);
  renderRecompRows();
}

function renderRecompRows() {
  const r = state.recomp;
  const rows = [...r.order].reverse().map((k, pos) => {
    const s = r.layers[k];
    const row = document.createElement("div");
    row.className = "recomp-row";
    row.dataset.k = k;
    const name = document.createElement("label");
    name.className = "name";
    const visible = document.createElement("input");
    visible.type = "checkbox";
    visible.className = "visible";
    visible.checked = s.visible;
    visible.addEventListener("change", () => { s.visible = visible.checked; updateComposite(); });
    name.append(visible, ` foreground ${k}: ${state.run.manifest.prompts?.foregrounds?.[k - 1] ?? ""}`);
    const up = document.createElement("button");
    up.type = "button";
    up.className = "up";
    up.textContent = "▲";
    up.title = "move up (in front)";
    up.disabled = pos === 0;
    up.addEventListener("click", () => moveLayer(k, +1));
    const down = document.createElement("button");
    down.type = "button";
    down.className = "down";
    down.textContent = "▼";
    down.title = "move down (behind)";
    down.disabled = pos === r.order.length - 1;
    down.addEventListener("click", () => moveLayer(k, -1));
    const opacity = document.createElement("input");
    opacity.type = "range";
    opacity.className = "opacity";
    opacity.min = 0; opacity.max = 1; opacity.step = 0.05; opacity.value = s.opacity;
    opacity.addEventListener("input", () => { s.opacity = Number(opacity.value); updateComposite(); });
    const offsets = ["dx", "dy"].map((key) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "number";
      input.className = key;
      input.step = 1;
      input.value = s[key];
      input.addEventListener("input", () => { s[key] = Math.trunc(Number(input.value) || 0); updateComposite(); });
      label.append(key === "dx" ? "x " : "y ", input);
      label.style.display = "inline";
      return label;
    });
    const opacityLabel = document.createElement("label");
    opacityLabel.style.display = "inline";
    opacityLabel.append("opacity ", opacity);
    row.append(name, up, down, opacityLabel, ...offsets);
    return row;
  });
  $("#recomp-layers").replaceChildren(...rows);
}

function moveLayer(k, by) {
  const order = state.recomp.order;
  const i = order.indexOf(k), j = i + by;
  if (j < 0 || j >= order.length) return;
  [order[i], order[j]] = [order[j], order[i]];
  renderRecompRows();
  updateComposite();
}

function recompBody() {
  const r = state.recomp;
  return { layers: r.order.map((k) => ({ k, ...r.layers[k] })), background: r.background };
}

async function updateComposite() {
  if (!state.run) return;
  const seq = ++state.compositeSeq;
  const canvas = $("#composite");
  canvas.dataset.state = "updating";
  try {
    const bitmap = await bitmapOf(await postJSON(`/api/runs/${state.run.id}/composite.png`, recompBody()));
    if (seq !== state.compositeSeq) return; // a newer request is on its way
    player.views.get("composite").bitmap = bitmap;
    drawView(player.views.get("composite"));
    canvas.dataset.state = "ready";
  } catch (e) {
    if (seq !== state.compositeSeq) return;
    canvas.dataset.state = "error";
    say(e.message, "error");
  }
}

$("#bg-file").addEventListener("change", async () => {
  const file = $("#bg-file").files[0];
  if (!file || !state.run) return;
  say("");
  const limit = state.model ? state.model.max_upload_bytes : Infinity;
  if (file.size > limit) {
    say(`${file.name} is ${sizeText(file.size)}; the upload limit is ${sizeText(limit)}`, "error");
    $("#bg-file").value = "";
    return;
  }
  $("#bg-status").textContent = `uploading ${file.name}…`;
  const form = new FormData();
  form.append("file", file);
  try {
    const upload = await (await api("/api/uploads", { method: "POST", body: form })).json();
    state.recomp.background = upload.id;
    $("#bg-status").textContent = `${upload.name} (${upload.width}x${upload.height}, ${upload.frames} frame(s)), ` +
      "fitted to the video";
    await updateComposite();
  } catch (e) {
    $("#bg-status").textContent = state.recomp.background ? "uploaded background" : "original background";
    $("#bg-file").value = "";
    say(e.message, "error");
  }
});

$("#bg-reset").addEventListener("click", () => {
  if (!state.recomp) return;
  state.recomp.background = null;
  $("#bg-file").value = "";
  $("#bg-status").textContent = "original background";
  updateComposite();
});

$("#export").addEventListener("click", async () => {
  if (!state.run) { say("generate or open an output directory first", "error"); return; }
  try {
    const blob = await (await postJSON(`/api/runs/${state.run.id}/composite.mp4`, recompBody())).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "composite.mp4";
    document.body.append(link);
    link.click();
    link.remove();
  } catch (e) {
    say(e.message, "error");
  }
});

// ------------------------------------------------------------------ open panel
async function refreshRuns() {
  try {
    const runs = await (await api("/api/runs")).json();
    $("#runs").replaceChildren(...runs.map((r) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "show";
      button.addEventListener("click", () => loadRun(r.id, "layers"));
      item.append(`${r.name} (${r.origin})`, button);
      return item;
    }));
    return runs;
  } catch (e) {
    say(e.message, "error");
    return [];
  }
}

$("#open-btn").addEventListener("click", async () => {
  say("");
  try {
    const run = await (await postJSON("/api/open", { path: $("#open-path").value })).json();
    await loadRun(run.id, "layers");
  } catch (e) {
    say(e.message, "error");
  }
});

// ------------------------------------------------------------------ start
(async () => {
  await loadModel();
  const runs = await refreshRuns();
  if (runs.length) await loadRun(runs[runs.length - 1].id, state.userTab ? null : "layers");
  document.body.dataset.ready = "1";
})();
