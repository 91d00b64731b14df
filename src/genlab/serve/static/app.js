// genlab serve: the page. Plain JS, no build step, no CDN; every call goes to this server's /api/.
"use strict";
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const HEADERS = token ? { "X-Genlab-Token": token } : {};
const N = 100;                  // the sample grid: 10 x 10
let info = null, shift = [];

function fail(msg) { const e = $("error"); e.textContent = msg; e.hidden = !msg; }

async function api(path, body) {
  const opts = body === undefined ? { headers: HEADERS }
    : { method: "POST", headers: { ...HEADERS, "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { const d = (await r.json()).detail; msg = typeof d === "string" ? d : JSON.stringify(d); } catch (_) {}
    throw new Error(path + ": " + msg);
  }
  return r;
}

// Shows an image response; data-seq counts the images shown (the browser test waits on it).
function show(img, blob) {
  const old = img.src;
  img.onload = () => { img.dataset.seq = String(+img.dataset.seq + 1); if (old.startsWith("blob:")) URL.revokeObjectURL(old); };
  img.src = URL.createObjectURL(blob);
}

// Live controls: at most one request in flight per target; the newest asked-for state wins.
function latest(fn) {
  let busy = false, again = false;
  const run = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try { await fn(); fail(""); } catch (e) { fail(e.message); }
    busy = false;
    if (again) { again = false; run(); }
  };
  return run;
}

function labels() { const v = $("class").value; return v === "" ? null : [+v]; }
function seed(id) { return Math.max(0, Math.floor(+$(id).value || 0)); }

const drawGrid = latest(async () => {
  const r = await api("/api/sample", { seed: seed("seed"), n: N, nrow: 10, labels: labels(), shift });
  show($("grid"), await r.blob());
});

const drawFrame = latest(async () => {
  const l = labels();
  const r = await api("/api/interpolate", { seed_a: seed("seed-a"), seed_b: seed("seed-b"), t: +$("t").value,
                                             label: l ? l[0] : null, scale: 1 });
  show($("frame"), await r.blob());
});

async function downloadGif(ev) {
  ev.preventDefault();
  try {
    const l = labels();
    const r = await api("/api/interpolate", { seed_a: seed("seed-a"), seed_b: seed("seed-b"), steps: 24,
                                               format: "gif", label: l ? l[0] : null });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await r.blob());
    a.download = `walk-${seed("seed-a")}-${seed("seed-b")}.gif`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) { fail(e.message); }
}

function buildSliders(k) {
  shift = new Array(k).fill(0);
  const box = $("sliders");
  box.innerHTML = "";
  for (let i = 0; i < k; i++) {
    const lab = document.createElement("label");
    lab.innerHTML = `direction ${i + 1} <input type="range" min="-3" max="3" step="0.1" value="0" data-k="${i}"> <output>0</output>`;
    const input = lab.querySelector("input");
    input.addEventListener("input", () => {
      shift[i] = +input.value;
      lab.querySelector("output").textContent = input.value;
      drawGrid();
    });
    box.appendChild(lab);
  }
}

// ---- the VAE: a drawing pad -> reconstruction + its point on the latent map
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#800000", "#469990"];
let map = null;

function mapXY(p) {
  const [x0, x1, y0, y1] = map.box, W = $("map").width, H = $("map").height;
  return [(p[0] - x0) / (x1 - x0) * (W - 20) + 10, H - 10 - (p[1] - y0) / (y1 - y0) * (H - 40)];
}

function drawMap(point) {
  const c = $("map").getContext("2d");
  c.clearRect(0, 0, c.canvas.width, c.canvas.height);
  map.points.forEach((p, i) => {
    const [x, y] = mapXY(p);
    c.fillStyle = map.labels[i] >= 0 ? COLORS[map.labels[i] % 10] : "#888";
    c.fillRect(x - 1.5, y - 1.5, 3, 3);
  });
  if (map.labels.some((l) => l >= 0)) {        // legend: the class colours
    c.font = "bold 12px sans-serif";
    for (let k = 0; k < 10; k++) { c.fillStyle = COLORS[k]; c.fillText(String(k), 6 + 12 * k, 14); }
  }
  if (point) {
    const [x, y] = mapXY(point);
    c.strokeStyle = "#000"; c.lineWidth = 3;
    c.beginPath(); c.arc(x, y, 8, 0, 2 * Math.PI); c.stroke();
  }
  $("map").dataset.seq = String(+$("map").dataset.seq + 1);
}

async function loadMap() {
  map = await (await api("/api/latent-map")).json();
  const xs = map.points.map((p) => p[0]), ys = map.points.map((p) => p[1]);
  map.box = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  drawMap(null);
}

const reconstruct = latest(async () => {
  const [C, H, W] = info.shape, small = document.createElement("canvas");
  small.width = W; small.height = H;
  const s = small.getContext("2d");
  s.drawImage($("pad"), 0, 0, W, H);            // the browser's smoothing does the area average
  const rgba = s.getImageData(0, 0, W, H).data, pixels = [];
  for (let c = 0; c < C; c++) for (let i = 0; i < H * W; i++) pixels.push(rgba[4 * i + (C === 1 ? 0 : c)]);
  const out = await (await api("/api/reconstruct", { pixels })).json();
  $("recon").onload = () => { $("recon").dataset.seq = String(+$("recon").dataset.seq + 1); };
  $("recon").src = out.png;
  if (map) drawMap(out.point);
});

function setupPad() {
  const pad = $("pad"), c = pad.getContext("2d");
  const clear = () => { c.fillStyle = "#000"; c.fillRect(0, 0, pad.width, pad.height); };
  clear();
  let down = false, last = null;
  const at = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
  pad.addEventListener("pointerdown", (e) => { down = true; last = at(e); pad.setPointerCapture(e.pointerId); });
  pad.addEventListener("pointermove", (e) => {
    if (!down) return;
    const p = at(e);
    c.strokeStyle = "#fff"; c.lineWidth = 22; c.lineCap = "round";
    c.beginPath(); c.moveTo(...last); c.lineTo(...p); c.stroke();
    last = p;
    reconstruct();
  });
  pad.addEventListener("pointerup", () => { down = false; reconstruct(); });
  $("clear").addEventListener("click", () => { clear(); reconstruct(); });
}

// ---- training view: loss curves from metrics.jsonl and the newest samples grid, refreshed
let lastStep = null, lastCkpt = null;

function drawLoss(rows, stats) {
  const c = $("loss").getContext("2d"), W = c.canvas.width, H = c.canvas.height;
  c.clearRect(0, 0, W, H);
  rows = rows.filter((r) => stats.some((s) => Number.isFinite(r[s])));
  if (rows.length < 2) { c.fillStyle = "#666"; c.fillText("no losses logged yet", 10, 20); return; }
  const vals = rows.flatMap((r) => stats.map((s) => r[s]).filter(Number.isFinite));
  const lo = Math.min(...vals), hi = Math.max(...vals), s0 = rows[0].step, s1 = rows[rows.length - 1].step;
  const X = (s) => 40 + (s - s0) / Math.max(1, s1 - s0) * (W - 50), Y = (v) => H - 20 - (v - lo) / Math.max(1e-9, hi - lo) * (H - 40);
  c.strokeStyle = "#999"; c.strokeRect(40, 20, W - 50, H - 40);
  c.fillStyle = "#444"; c.fillText(hi.toFixed(3), 2, 24); c.fillText(lo.toFixed(3), 2, H - 20); c.fillText(`step ${s1}`, W - 80, H - 5);
  stats.forEach((s, j) => {
    c.strokeStyle = COLORS[j % 10]; c.beginPath();
    rows.forEach((r, i) => { if (Number.isFinite(r[s])) (i ? c.lineTo : c.moveTo).call(c, X(r.step), Y(r[s])); });
    c.stroke(); c.fillStyle = COLORS[j % 10]; c.fillText(s, 50 + 90 * j, 14);
  });
}

async function poll() {
  let wait = 15000;
  try {
    const m = await (await api("/api/metrics?rows=400")).json();
    const step = m.rows.length ? m.rows[m.rows.length - 1].step : null;
    $("train-state").textContent = m.training ? `training… step ${step} (refreshing every 3 s)` : step === null ? "no metrics" : `finished at step ${step}`;
    if (m.training) wait = 3000;
    if (step !== lastStep) {
      lastStep = step;
      drawLoss(m.rows, m.loss_stats);
      try { show($("newest"), await (await api("/api/training-samples")).blob()); } catch (_) { $("newest").hidden = true; }
    }
    const i = await (await api("/api/info")).json();
    if (i.step !== lastCkpt) { lastCkpt = i.step; info = i; showInfo(); drawGrid(); drawFrame(); }
  } catch (e) { fail(e.message); }
  setTimeout(poll, wait);
}

function showInfo() {
  $("info").textContent = `${info.model} · checkpoint step ${info.step} · z ${info.z_dim} · ` +
    `${info.shape.join("×")}` + (info.conditional ? ` · ${info.num_classes} classes` : "");
}

async function start() {
  info = await (await api("/api/info")).json();
  lastCkpt = info.step;
  showInfo();
  if (info.conditional) {
    $("class-box").hidden = false;
    $("class").options[0].textContent = "all (column k = class k)";
    for (let k = 0; k < info.num_classes; k++) $("class").add(new Option(String(k), String(k)));
  }
  buildSliders(info.directions);
  $("new").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 1e9)); drawGrid(); });
  $("seed").addEventListener("change", drawGrid);
  $("class").addEventListener("change", () => { drawGrid(); drawFrame(); });
  $("reset").addEventListener("click", () => { buildSliders(info.directions); drawGrid(); });
  for (const id of ["seed-a", "seed-b"]) $(id).addEventListener("change", drawFrame);
  $("t").addEventListener("input", drawFrame);
  $("gif").addEventListener("click", downloadGif);
  if (info.autoencoder) { $("vae").hidden = false; setupPad(); loadMap().catch((e) => fail(e.message)); }
  drawGrid(); drawFrame(); poll();
}

start().catch((e) => fail(e.message));
