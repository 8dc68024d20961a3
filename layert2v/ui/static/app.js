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
  // a message belongs to the panel it was shown in: another tab clears it
  button.addEventListener("click", () => { state.userTab = true; say(""); showTab(button.dataset.tab); });
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
  remove.addEventListener("click", () => { row.remove(); updateFgLimit(); trajForegroundsChanged(); });
  input.addEventListener("change", trajForegroundsChanged);
  row.append(input, remove);
  $("#fg-rows").append(row);
  updateFgLimit();
  trajForegroundsChanged();
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
    $("#edit-steps").value = m.steps;
    $("#edit-guidance").value = m.guidance;
    $("#dec-method").value = m.decompose_method;
    $("#dec-method").dataset.why = m.decompose_why;
    decMethodChanged();
    if (m.load_error) say(m.load_error, "error");
  } catch (e) {
    say(`could not read the model: ${e.message}`, "error");
  }
  if (!fgRows().length) addFgRow();
  updateFgLimit();
}

async function startGeneration() {
  say("");
  const body = {
    prompt: $("#prompt").value, background: $("#background").value, foregrounds: fgRows().map((i) => i.value),
    seed: $("#seed").value, steps: $("#steps").value, guidance: $("#guidance").value, frames: $("#frames").value,
    width: $("#width").value, height: $("#height").value, trajectories: trajDocument(),
  };
  try {
    const job = await (await postJSON("/api/generate", body)).json();
    state.lastRequest = body;
    startJob(job.id, generateProgress);
  } catch (e) {
    say(e.message, "error");
  }
}
$("#generate").addEventListener("click", startGeneration);

// where a job's progress shows: the Generate panel's bar, or the Decompose and edit panel's
const generateProgress = { bar: "#progress", status: "#job-status" };
const editProgress = { bar: "#edit-progress", status: "#edit-status" };

function startJob(id, where) {
  $(where.bar).value = 0;
  $(where.bar).dataset.seen = "";
  followJob(id, where);
}

function showJob(job, where = generateProgress) {
  const bar = $(where.bar);
  bar.value = job.steps ? job.step / job.steps : 0;
  if (job.step) {
    const seen = bar.dataset.seen ? bar.dataset.seen.split(",") : [];
    if (seen[seen.length - 1] !== String(job.step)) bar.dataset.seen = [...seen, job.step].join(",");
  }
  const unit = job.unit || "step";
  const words = {
    queued: `waiting in the queue: ${job.ahead} generation(s) ahead of this one`,
    loading: "loading the model…",
    denoising: `${unit === "frame" ? "decomposing" : "denoising"}: ${unit} ${job.step} / ${job.steps}`,
    saving: `${unit} ${job.step} / ${job.steps}; saving the layers…`,
    done: `done: ${unit} ${job.step} / ${job.steps}`,
    error: "failed",
  };
  $(where.status).textContent = words[job.state] || job.state;
  $(where.status).dataset.state = job.state;
}

async function followJob(id, where = generateProgress) {
  state.job = id;
  while (state.job === id) {
    let job;
    try {
      job = await (await api(`/api/jobs/${id}`)).json();
    } catch (e) {
      say(`lost track of the generation: ${e.message}`, "error");
      return;
    }
    showJob(job, where);
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
  if (view.boxes) strokeBoxes(ctx, view.boxes, f, view.w, view.h);
}

// the requested box of each foreground at frame f, one pixel wide on the box's outer pixels, in its colour
function strokeBoxes(ctx, boxes, f, w, h) {
  ctx.lineWidth = 1;
  for (const [k, perFrame] of Object.entries(boxes)) {
    const b = perFrame[Math.min(f, perFrame.length - 1)];
    const x0 = Math.round(b[0] * w), y0 = Math.round(b[1] * h), x1 = Math.round(b[2] * w), y1 = Math.round(b[3] * h);
    ctx.strokeStyle = trajColour(Number(k));
    ctx.strokeRect(x0 + 0.5, y0 + 0.5, Math.max(0, x1 - x0 - 1), Math.max(0, y1 - y0 - 1));
  }
}

function drawAll() {
  for (const view of player.views.values()) drawView(view);
  if (!$("#panel-trajectories").hidden) drawTraj();
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
  const prompts = run.manifest.prompts?.foregrounds ?? [];
  const layers = run.layer_order.map((layer) => [layer, layerCaption(layer, prompts)]);
  if (run.trajectory_boxes) layers.push(["full", "full video with the requested boxes", "boxes"]);
  const loads = layers.map(async ([layer, caption, key = layer]) => {
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.dataset.layer = key;
    if (layer.startsWith("foreground_")) canvas.className = "checker";
    const label = document.createElement("figcaption");
    label.textContent = caption;
    figure.append(canvas, label);
    views.append(figure);
    const view = makeView(key, canvas, run);
    if (key === "boxes") view.boxes = run.trajectory_boxes;
    view.bitmap = await bitmapOf(await api(`/api/runs/${id}/sprite/${layer}.png`));
  });
  if (run.trajectory_error) say(run.trajectory_error, "error");
  $("#traj-result").hidden = !run.files.includes("trajectory.png");
  $("#traj-sheet").src = run.files.includes("trajectory.png") ? `/api/runs/${id}/files/trajectory.png` : "";

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
  setupRegenerate(run);
  try {
    await Promise.all(loads);
  } catch (e) {
    say(`could not load the layers: ${e.message}`, "error");
    return;
  }
  views.dataset.run = id;
  drawAll();
  drawTraj();
  setPlaying(player.playing);
  if (tab) showTab(tab);
  refreshRuns();
  await updateComposite();
}

// The layer names come from the server (the manifest's layer_order, the layout's compositing order): the page
// never rebuilds them. "foreground_2" -> "foreground 2: <its prompt>", "alpha_2" -> "alpha 2".
function layerCaption(layer, prompts) {
  if (layer === "full") return "full video";
  const [kind, k] = layer.split("_");
  if (kind === "foreground") return `foreground ${k}: ${prompts[k - 1] ?? ""}`;
  return k ? `${kind} ${k}` : kind;
}

// ------------------------------------------------------------------ recomposite panel
function setupRecomposite(run) {
  state.recomp = {
    order: [...run.composite_order], // bottom first
    layers: Object.fromEntries(run.composite_order.map((k) => [k, { visible: true, opacity: 1, dx: 0, dy: 0 }])),
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

// ------------------------------------------------------------------ trajectories panel
// Key frames per foreground: traj.keys.get(k) = [{frame, box: [x0, y0, x1, y1]}] in fractions of the frame, by
// frame. The boxes of every frame come from the server (/api/trajectory: layert2v.trajectory's interpolation,
// the one generation uses), which also checks them; the page draws what it gets back.
const traj = { keys: new Map(), boxes: {}, drag: null, seq: 0 };
const TRAJ_COLOURS = ["rgb(255,64,64)", "rgb(64,160,255)", "rgb(255,220,0)", "rgb(0,230,120)", "rgb(255,120,255)",
  "rgb(255,160,0)"]; // as in trajectory.png
const trajColour = (k) => TRAJ_COLOURS[(k - 1) % TRAJ_COLOURS.length];
const TRAJ_CANVAS_WIDTH = 384;

function trajForegroundCount() {
  // rows filled in: that many foregrounds; all blank: as many as the full prompt names, up to the model's maximum
  const rows = fgRows();
  if (rows.some((i) => i.value.trim())) return rows.length;
  return state.model ? state.model.max_foregrounds : 1;
}

function trajFrames() { return Math.max(1, Math.trunc(Number($("#frames").value) || 1)); }
const trajForeground = () => Number($("#traj-fg").value || 1);
const trajFrame = () => Math.trunc(Number($("#traj-frame").value) || 0);

function trajDocument() {
  const entries = [...traj.keys.entries()].filter(([, keys]) => keys.length).sort((a, b) => a[0] - b[0]);
  if (!entries.length) return null;
  const number = (sel) => ($(sel).value === "" ? null : Number($(sel).value));
  return {
    format: "layert2v-trajectories", version: 1,
    guidance: { strength: number("#traj-strength"), steps: number("#traj-steps") },
    foregrounds: entries.map(([k, keys]) => ({ foreground: k, keyframes: keys.map(({ frame, box }) => ({ frame, box })) })),
  };
}

function trajForegroundsChanged() {
  const select = $("#traj-fg");
  const chosen = select.value;
  const n = trajForegroundCount();
  select.replaceChildren(...Array.from({ length: n }, (_, i) => {
    const option = document.createElement("option");
    option.value = i + 1;
    const prompt = fgRows()[i]?.value.trim();
    option.textContent = `${i + 1}${prompt ? `: ${prompt}` : ""}`;
    return option;
  }));
  if (chosen && Number(chosen) <= n) select.value = chosen;
}

function trajSize() {
  const w = Number($("#width").value) || 64, h = Number($("#height").value) || 64;
  return [w, h];
}

function drawTraj() {
  const canvas = $("#traj-canvas");
  const [w, h] = trajSize();
  const cw = TRAJ_CANVAS_WIDTH, ch = Math.round(TRAJ_CANVAS_WIDTH * h / w);
  if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  const f = trajFrame();
  const full = player.views.get("full");
  if (state.run && full && full.bitmap) {
    const g = Math.min(f, state.run.frames - 1);
    const col = g % full.cols, row = Math.floor(g / full.cols);
    ctx.drawImage(full.bitmap, col * full.w, row * full.h, full.w, full.h, 0, 0, cw, ch);
    $("#traj-canvas-note").textContent = `frame ${g} of ${state.run.name}, the result shown; boxes are drawn for ` +
      `a ${w}x${h} clip of ${trajFrames()} frames (the Generate panel's size and frames)`;
  } else {
    ctx.fillStyle = "#f0f0f0";
    ctx.fillRect(0, 0, cw, ch);
    $("#traj-canvas-note").textContent = `blank ${w}x${h} frame: nothing generated or opened yet`;
  }
  for (const [k, perFrame] of Object.entries(traj.boxes)) { // the interpolated path: box centres, every box
    const colour = trajColour(Number(k));
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    perFrame.forEach((b, i) => {
      const x = (b[0] + b[2]) / 2 * cw, y = (b[1] + b[3]) / 2 * ch;
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
    ctx.globalAlpha = 0.35;
    ctx.lineWidth = 1;
    for (const b of perFrame) ctx.strokeRect(b[0] * cw, b[1] * ch, (b[2] - b[0]) * cw, (b[3] - b[1]) * ch);
    const now = perFrame[Math.min(f, perFrame.length - 1)];
    ctx.fillStyle = colour;
    ctx.globalAlpha = 0.25;
    ctx.fillRect(now[0] * cw, now[1] * ch, (now[2] - now[0]) * cw, (now[3] - now[1]) * ch);
    ctx.globalAlpha = 1;
  }
  for (const [k, keys] of traj.keys) { // key frames: solid
    ctx.strokeStyle = trajColour(k);
    for (const { frame, box } of keys) {
      ctx.lineWidth = frame === f ? 3 : 2;
      ctx.strokeRect(box[0] * cw, box[1] * ch, (box[2] - box[0]) * cw, (box[3] - box[1]) * ch);
    }
  }
  if (traj.drag) {
    const [[ax, ay], [bx, by]] = [traj.drag.start, traj.drag.end];
    ctx.setLineDash([5, 4]);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 2;
    ctx.strokeRect(ax * cw, ay * ch, (bx - ax) * cw, (by - ay) * ch);
    ctx.setLineDash([]);
  }
}

function renderTrajKeys() {
  const [w, h] = trajSize();
  const items = [];
  for (const [k, keys] of [...traj.keys.entries()].sort((a, b) => a[0] - b[0])) {
    for (const { frame, box } of keys) {
      const item = document.createElement("li");
      item.dataset.k = k;
      item.dataset.frame = frame;
      item.style.color = trajColour(k);
      const px = box.map((v, i) => Math.round(v * (i % 2 ? h : w)));
      item.append(`foreground ${k}, frame ${frame}: x ${px[0]}-${px[2]}, y ${px[1]}-${px[3]} px `);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove-key";
      remove.textContent = "remove";
      remove.addEventListener("click", () => removeKey(k, frame));
      item.append(remove);
      items.push(item);
    }
  }
  $("#traj-keys").replaceChildren(...items);
  const summary = [...traj.keys.entries()].filter(([, keys]) => keys.length)
    .map(([k, keys]) => `foreground ${k} (${keys.length} key frame(s))`);
  $("#traj-summary").textContent = summary.length
    ? `trajectories: ${summary.join(", ")}, sent with this generation (Trajectories panel)`
    : "trajectories: none (draw boxes in the Trajectories panel)";
}

async function refreshTraj() {
  renderTrajKeys();
  const seq = ++traj.seq;
  const canvas = $("#traj-canvas");
  const doc = trajDocument();
  if (!doc) {
    traj.boxes = {};
    canvas.dataset.state = "empty";
    drawTraj();
    return;
  }
  canvas.dataset.state = "updating";
  try {
    const answer = await (await postJSON("/api/trajectory",
      { trajectories: doc, frames: trajFrames(), foregrounds: trajForegroundCount() })).json();
    if (seq !== traj.seq) return;
    traj.boxes = answer.boxes;
    canvas.dataset.state = "ready";
    say("");
  } catch (e) {
    if (seq !== traj.seq) return;
    traj.boxes = {};
    canvas.dataset.state = "error";
    say(e.message, "error");
  }
  drawTraj();
}

function setKey(k, frame, box) {
  const keys = (traj.keys.get(k) || []).filter((key) => key.frame !== frame);
  keys.push({ frame, box });
  keys.sort((a, b) => a.frame - b.frame);
  traj.keys.set(k, keys);
  refreshTraj();
}

function removeKey(k, frame) {
  const keys = (traj.keys.get(k) || []).filter((key) => key.frame !== frame);
  if (keys.length) traj.keys.set(k, keys); else traj.keys.delete(k);
  refreshTraj();
}

function canvasFraction(event) {
  const rect = $("#traj-canvas").getBoundingClientRect();
  return [(event.clientX - rect.left) / rect.width, (event.clientY - rect.top) / rect.height];
}

$("#traj-canvas").addEventListener("mousedown", (event) => {
  event.preventDefault();
  const at = canvasFraction(event);
  traj.drag = { start: at, end: at };
  drawTraj();
});
window.addEventListener("mousemove", (event) => {
  if (!traj.drag) return;
  traj.drag.end = canvasFraction(event);
  drawTraj();
});
window.addEventListener("mouseup", (event) => {
  if (!traj.drag) return;
  const { start } = traj.drag;
  const end = canvasFraction(event);
  traj.drag = null;
  const r = (v) => Math.round(v * 10000) / 10000; // not clamped: a box dragged out of the frame is refused
  setKey(trajForeground(), trajFrame(),
    [r(Math.min(start[0], end[0])), r(Math.min(start[1], end[1])), r(Math.max(start[0], end[0])),
      r(Math.max(start[1], end[1]))]);
});

$("#traj-frame").addEventListener("input", drawTraj);
for (const sel of ["#frames", "#width", "#height"]) $(sel).addEventListener("change", refreshTraj);
$("#traj-clear").addEventListener("click", () => { traj.keys.delete(trajForeground()); refreshTraj(); });
$("#traj-clear-all").addEventListener("click", () => { traj.keys.clear(); refreshTraj(); });
$("#traj-generate").addEventListener("click", async () => {
  showTab("generate");
  await startGeneration();
});
document.querySelector("#tabs button[data-tab=trajectories]").addEventListener("click", () => {
  trajForegroundsChanged();
  $("#traj-frame").max = trajFrames() - 1;
  drawTraj();
});

// ------------------------------------------------------------------ decompose and edit panel
function editNumbers() {
  return { seed: $("#edit-seed").value, steps: $("#edit-steps").value, guidance: $("#edit-guidance").value };
}

// the engine (the data engine's stages) takes no seed, steps or guidance; its default reason is the server's
function decMethodChanged() {
  const engine = $("#dec-method").value === "engine";
  const why = $("#dec-method").value === state.model?.decompose_method ? ` (${$("#dec-method").dataset.why})` : "";
  $("#dec-why").textContent = `${engine ? "engine" : "model"}${why}`;
}
$("#dec-method").addEventListener("change", decMethodChanged);

$("#dec-go").addEventListener("click", async () => {
  say("");
  const file = $("#dec-file").files[0];
  if (!file) { say("choose the video to split into layers", "error"); return; }
  const limit = state.model ? state.model.max_upload_bytes : Infinity;
  if (file.size > limit) {
    say(`${file.name} is ${sizeText(file.size)}; the upload limit is ${sizeText(limit)}`, "error");
    return;
  }
  const form = new FormData();
  form.append("file", file);
  form.append("background", $("#dec-background").value);
  form.append("foregrounds", JSON.stringify($("#dec-foregrounds").value.split("\n").map((l) => l.trim())
    .filter((l) => l)));
  form.append("prompt", $("#dec-prompt").value);
  form.append("method", $("#dec-method").value);
  if ($("#dec-method").value === "model") {
    for (const [key, value] of Object.entries(editNumbers())) form.append(key, value);
  }
  try {
    const job = await (await api("/api/decompose", { method: "POST", body: form })).json();
    startJob(job.id, editProgress);
  } catch (e) {
    say(e.message, "error");
  }
});

function setupRegenerate(run) {
  $("#regen-source").textContent = `result: ${run.name} (${run.num_foregrounds} foreground(s)); the background ` +
    "and the other foregrounds are kept exactly";
  const prompts = run.manifest.prompts?.foregrounds ?? [];
  $("#regen-layer").replaceChildren(...run.layer_order.filter((l) => l.startsWith("foreground_")).map((layer) => {
    const option = document.createElement("option");
    option.value = layer;
    option.textContent = layerCaption(layer, prompts);
    return option;
  }));
}

$("#regen-go").addEventListener("click", async () => {
  say("");
  if (!state.run) { say("generate, decompose or open a result first", "error"); return; }
  const body = { layer: $("#regen-layer").value, prompt: $("#regen-prompt").value, ...editNumbers() };
  if ($("#regen-boxes").checked) {
    const k = Number(body.layer.split("_")[1]);
    const doc = trajDocument();
    const mine = doc ? doc.foregrounds.filter((f) => f.foreground === k) : [];
    if (!mine.length) { say(`draw boxes for foreground ${k} in the Trajectories panel first`, "error"); return; }
    body.trajectories = { ...doc, foregrounds: mine };
  }
  try {
    const job = await (await postJSON(`/api/runs/${state.run.id}/regenerate`, body)).json();
    startJob(job.id, editProgress);
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
  if (runs.length) {
    await loadRun(runs[runs.length - 1].id, null);
    if (!state.userTab) showTab("layers");  // asked once the layers are in: a tab clicked meanwhile stays
  }
  document.body.dataset.ready = "1";
})();
