// The explorer page: plain JavaScript, no libraries, everything from this server.
//
// Slider requests are coalesced: at most one edit is in flight; while it is, only the latest
// slider value is kept, and it is sent when the reply arrives. A reply is drawn only if no newer
// request was sent after it (choosing another image or rule invalidates replies in flight).
// While a slider is dragged the page asks for the edit and the re-reads only; when it is
// released (its "change" event) it asks again with the saliency map and the judge's read.
"use strict";

const state = {
  info: null,            // GET api/info
  items: [],             // gallery items
  item: null,            // the chosen item id
  slice: null,           // 3D: the shown slice
  attribute: null,       // the attribute being edited
  alpha: 0,
  last: null,            // the last edit reply drawn
  session: Math.random().toString(36).slice(2, 12),
};

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

async function api(path, body) {
  const options = body === undefined ? {} : (body instanceof FormData
    ? { method: "POST", body }
    : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const response = await fetch(path, options);
  let payload = null;
  try { payload = await response.json(); } catch (e) { payload = null; }
  if (!response.ok) {
    const message = payload && payload.error ? payload.error : `HTTP ${response.status}`;
    const field = payload && payload.field ? ` [${payload.field}]` : "";
    throw new Error(message + field);
  }
  return payload;
}

// One channel of "latest value only" requests (module comment).
function latestOnly(send, onReply) {
  let pending = null, busy = false, sent = 0;
  async function pump() {
    busy = true;
    while (pending !== null) {
      const body = pending;
      pending = null;
      const mine = ++sent;
      try {
        const reply = await send(body, mine);
        if (mine === sent) onReply(reply, body);
      } catch (error) {
        if (mine === sent) setStatus(error.message, true);
      }
    }
    busy = false;
  }
  return {
    push(body) { pending = body; if (!busy) pump(); },
    invalidate() { sent++; pending = null; },
  };
}

const fmt = (v) => (v === null || v === undefined || Number.isNaN(v)) ? "–"
  : (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

function unitOf(name) {
  const a = state.info.attributes.find((x) => x.name === name);
  return a ? a.unit : "";
}

// ---------------------------------------------------------------- gallery and upload
function renderGallery() {
  const g = $("gallery");
  g.replaceChildren();
  for (const item of state.items) {
    const b = document.createElement("button");
    b.className = "thumb" + (item.id === state.item ? " selected" : "");
    b.dataset.item = item.id;
    const img = document.createElement("img");
    img.src = item.thumbnail;
    img.alt = item.id;
    const cap = document.createElement("div");
    cap.className = "caption";
    cap.textContent = item.case_id + (item.slice !== null ? ` · slice ${item.slice}` : "") +
      (item.source === "upload" ? " (upload)" : "");
    const truth = document.createElement("div");
    truth.className = "truth";
    truth.textContent = Object.entries(item.attributes)
      .filter(([, v]) => v !== null).map(([k, v]) => `${k} ${fmt(v)} ${unitOf(k)}`).join(", ");
    b.append(img, cap, truth);
    b.addEventListener("click", () => chooseItem(item.id));
    g.append(b);
  }
  for (const id of ["interp-a", "interp-b"]) {
    const select = $(id);
    const keep = select.value;
    select.replaceChildren(...state.items.map((item) => new Option(item.id, item.id)));
    if (keep) select.value = keep;
  }
  if (!$("interp-b").value || $("interp-b").value === $("interp-a").value) {
    if (state.items.length > 1) $("interp-b").value = state.items[1].id;
  }
}

async function upload(event) {
  event.preventDefault();
  const form = new FormData();
  const image = $("upload-image").files[0];
  if (!image) return;
  form.append("image", image);
  const mask = $("upload-mask").files[0];
  if (mask) form.append("mask", mask);
  $("upload-message").textContent = "uploading…";
  try {
    const reply = await api("api/upload", form);
    state.items = state.items.concat(reply.items);
    renderGallery();
    $("upload-message").textContent = `added ${reply.items.length} image(s)`;
    chooseItem(reply.items[0].id);
  } catch (error) {
    $("upload-message").textContent = error.message;
  }
}

// ---------------------------------------------------------------- editing
function buildSliders() {
  const list = $("slider-list");
  list.replaceChildren();
  for (const a of state.info.attributes) {
    const row = document.createElement("div");
    row.className = "slider-row";
    row.innerHTML = `
      <div><div class="name">${a.name} (${a.unit})</div>
        <div class="alpha">α = <span data-alpha-of="${a.name}">0.00</span></div></div>
      <div><input type="range" min="-1" max="1" step="0.05" value="0" data-attribute="${a.name}"
             aria-label="${a.name} (${a.unit})"></div>
      <div><div class="track" title="training range"><span class="mark before" data-mark-before="${a.name}"></span>
             <span class="mark after" data-mark-after="${a.name}"></span></div>
        <div class="reading" data-reading-of="${a.name}">model reads – ${a.unit}; training range
          ${fmt(a.low)}–${fmt(a.high)} ${a.unit}</div></div>`;
    list.append(row);
  }
  for (const input of list.querySelectorAll("input[type=range]")) {
    input.addEventListener("input", () => {
      for (const other of list.querySelectorAll("input[type=range]")) {
        if (other !== input) { other.value = "0"; document.querySelector(`[data-alpha-of="${other.dataset.attribute}"]`).textContent = "0.00"; }
      }
      state.attribute = input.dataset.attribute;
      state.alpha = Number(input.value);
      document.querySelector(`[data-alpha-of="${state.attribute}"]`).textContent = state.alpha.toFixed(2);
      requestEdit(false);
    });
    input.addEventListener("change", () => requestEdit(true));
  }
}

function editBody(detail = true) {
  const attribute = state.attribute || state.info.attributes[0].name;
  return {
    item: state.item, attribute, alpha: state.attribute ? state.alpha : 0,
    rule: $("rule").value, hold: $("hold").checked, slice: state.slice,
    saliency: detail, judge: detail, session: state.session,
  };
}

const editChannel = latestOnly(
  (body, seq) => api("api/edit", { ...body, seq }),
  (reply, body) => { if (!reply.superseded) drawEdit(reply, body.saliency); },
);

function requestEdit(detail = true) {
  if (!state.item) return;
  setStatus(state.alpha !== 0 && $("rule").value === "feedback" ? "editing… (the first move of an attribute searches its steps)" : "editing…");
  editChannel.push(editBody(detail));
}

function drawEdit(reply, detail) {
  state.last = reply;
  $("img-original").src = reply.images.original;
  $("img-reconstruction").src = reply.images.reconstruction;
  $("img-edited").src = reply.images.edited;
  $("img-saliency-base").src = reply.images.edited;
  $("img-difference").src = reply.images.difference;
  if (reply.images.saliency) $("img-saliency").src = reply.images.saliency;
  state.hasSaliency = Boolean(reply.images.saliency);
  $("img-saliency").hidden = !state.hasSaliency || !$("show-saliency").checked;
  const d = reply.scales.difference[1];
  $("cap-difference").textContent = `edited − reconstruction (blue −${fmt(d)}, red +${fmt(d)})`;
  const s = reply.scales.saliency ? reply.scales.saliency[1] : 0;
  $("cap-saliency").textContent = reply.alpha === 0 ? "saliency: no edit at α = 0"
    : state.hasSaliency ? `saliency of the ${reply.attribute} edit (peak ${s.toPrecision(2)}) over the edited image`
    : "saliency: shown when the slider is released";
  for (const a of state.info.attributes) {
    const before = reply.readings.before[a.name], after = reply.readings.after[a.name];
    const span = a.high - a.low || 1;
    const place = (v) => `${Math.max(0, Math.min(100, 100 * (v - a.low) / span))}%`;
    const mb = document.querySelector(`[data-mark-before="${a.name}"]`);
    const ma = document.querySelector(`[data-mark-after="${a.name}"]`);
    if (before !== null) mb.style.left = place(before);
    if (after !== null) ma.style.left = place(after);
    document.querySelector(`[data-reading-of="${a.name}"]`).textContent =
      `model reads ${fmt(before)} → ${fmt(after)} ${a.unit}; training range ${fmt(a.low)}–${fmt(a.high)} ${a.unit}`;
  }
  drawChart(reply);
  $("judge-note").textContent = !state.info.judge ? (reply.judge_note || "")
    : reply.judge ? (reply.judge_note || "") : "the judge's read is shown when the slider is released";
  const out = $("last-edit");
  out.dataset.attribute = reply.attribute;
  out.dataset.alpha = String(reply.alpha);
  out.dataset.before = String(reply.readings.before[reply.attribute]);
  out.dataset.after = String(reply.readings.after[reply.attribute]);
  out.dataset.detail = detail ? "1" : "0";
  out.value = `${reply.attribute} α=${reply.alpha}`;
  setStatus(`${reply.item}: ${reply.attribute} α = ${reply.alpha.toFixed(2)} (${reply.rule}) in ${reply.server_ms.toFixed(0)} ms`);
}

function drawChart(reply) {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const attrs = state.info.attributes;
  const series = [["model before", "#8a8f98", reply.readings.before], ["model after", "#d9480f", reply.readings.after]];
  if (reply.judge) series.push(["judge before", "#9cc3e6", reply.judge.before], ["judge after", "#1f6feb", reply.judge.after]);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const left = 40, top = 24, bottom = canvas.height - 40, width = canvas.width - left - 10;
  const group = width / attrs.length;
  const bar = Math.min(28, (group - 16) / series.length);
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#ccc";
  ctx.fillStyle = "#666";
  for (const f of [0, 0.5, 1]) {   // fractions of each attribute's training range
    const y = bottom - f * (bottom - top);
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + width, y); ctx.stroke();
    ctx.fillText(f === 0 ? "min" : f === 1 ? "max" : "", 8, y + 4);
  }
  attrs.forEach((a, i) => {
    const span = a.high - a.low || 1;
    series.forEach(([, color, values], j) => {
      const v = values ? values[a.name] : null;
      if (v === null || v === undefined) return;
      const f = Math.max(-0.1, Math.min(1.2, (v - a.low) / span));
      const x = left + i * group + 8 + j * bar;
      const y = bottom - f * (bottom - top);
      ctx.fillStyle = color;
      ctx.fillRect(x, Math.min(y, bottom), bar - 3, Math.abs(bottom - y));
      ctx.fillStyle = "#333";
      ctx.fillText(fmt(v), x, Math.min(y, bottom) - 3);
    });
    ctx.fillStyle = "#111";
    ctx.fillText(`${a.name} (${a.unit})`, left + i * group + 8, bottom + 16);
  });
  let x = left;
  for (const [label, color] of series) {
    ctx.fillStyle = color; ctx.fillRect(x, 6, 10, 10);
    ctx.fillStyle = "#333"; ctx.fillText(label, x + 14, 15);
    x += 110;
  }
  ctx.fillStyle = "#666";
  ctx.fillText("bars: each attribute on its training range", left + width - 230, 15);
}

function chooseItem(id) {
  state.item = id;
  const item = state.items.find((x) => x.id === id);
  $("current-item").textContent = id;
  for (const b of document.querySelectorAll(".thumb")) b.classList.toggle("selected", b.dataset.item === id);
  resetSliders(false);
  editChannel.invalidate();
  requestEdit();
  return item;
}

function resetSliders(send = true) {
  for (const input of document.querySelectorAll("#slider-list input[type=range]")) input.value = "0";
  for (const el of document.querySelectorAll("[data-alpha-of]")) el.textContent = "0.00";
  state.alpha = 0;
  if (send) requestEdit();
}

// ---------------------------------------------------------------- interpolation
const interpChannel = latestOnly((body) => api("api/interpolate", body), (reply) => {
  $("img-interp").src = reply.image;
  $("cap-interp").textContent = `${reply.item_a} → ${reply.item_b}: t = ${reply.t.toFixed(2)} ` +
    `(frame ${reply.frame + 1} of ${reply.frames}; ${reply.server_ms.toFixed(0)} ms)`;
});

function requestInterpolation() {
  const a = $("interp-a").value, b = $("interp-b").value;
  const t = Number($("interp-t").value);
  $("interp-t-value").textContent = t.toFixed(2);
  if (a && b) interpChannel.push({ item_a: a, item_b: b, t, slice: state.slice });
}

// ---------------------------------------------------------------- export
function download(name, url) {
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
}

async function exportPng() {
  if (!state.last) return;
  const size = 256, gap = 12, chart = $("chart");
  const panels = [["original", "img-original"], ["reconstruction", "img-reconstruction"], ["edited", "img-edited"],
                  [$("cap-difference").textContent, "img-difference"], ["saliency over edited", "img-saliency"]];
  const canvas = document.createElement("canvas");
  canvas.width = panels.length * (size + gap) + gap;
  canvas.height = 40 + size + 30 + chart.height + gap;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#111"; ctx.font = "14px system-ui, sans-serif";
  const r = state.last;
  ctx.fillText(`${state.info.run} · ${r.item} · ${r.attribute} α = ${r.alpha.toFixed(2)} · rule ${r.rule}` +
    (r.hold ? " (others held)" : ""), gap, 24);
  panels.forEach(([label, id], i) => {
    const x = gap + i * (size + gap), y = 40;
    if (id === "img-saliency") {
      ctx.drawImage($("img-saliency-base"), x, y, size, size);
      if (!$("img-saliency").hidden) { ctx.globalAlpha = Number($("saliency-opacity").value); ctx.drawImage($(id), x, y, size, size); ctx.globalAlpha = 1; }
    } else {
      ctx.drawImage($(id), x, y, size, size);
    }
    ctx.fillStyle = "#333"; ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(label, x, y + size + 18);
  });
  ctx.drawImage(chart, gap, 40 + size + 30);
  download(`explorer-${r.item.replace(":", "_")}-${r.attribute}.png`, canvas.toDataURL("image/png"));
}

async function exportJson() {
  if (!state.item) return;
  try {
    const body = editBody(false);
    delete body.session;
    const settings = await api("api/export", body);
    const blob = new Blob([JSON.stringify(settings, null, 1)], { type: "application/json" });
    download(`edit-settings-${state.item.replace(":", "_")}.json`, URL.createObjectURL(blob));
  } catch (error) {
    setStatus(error.message, true);
  }
}

// ---------------------------------------------------------------- start
async function main() {
  try {
    state.info = await api("api/info");
    $("run-name").textContent = `${state.info.run.split("/").slice(-4).join("/")} · ${state.info.spatial_dims}D`;
    $("run-name").title = state.info.run;
    $("rule").replaceChildren(...state.info.rules.map((r) => new Option(r, r, r === state.info.default_rule, r === state.info.default_rule)));
    if (state.info.slices) {
      $("slice-control").hidden = false;
      $("slice").max = String(state.info.slices - 1);
      $("slice").value = String(Math.floor(state.info.slices / 2));
      state.slice = Number($("slice").value);
      $("slice-value").textContent = $("slice").value;
    }
    buildSliders();
    state.items = (await api("api/items")).items;
    renderGallery();
    $("upload-form").addEventListener("submit", upload);
    $("rule").addEventListener("change", () => { editChannel.invalidate(); requestEdit(); });
    $("hold").addEventListener("change", () => { editChannel.invalidate(); requestEdit(); });
    $("reset").addEventListener("click", () => resetSliders(true));
    $("show-saliency").addEventListener("change", () => { $("img-saliency").hidden = !state.hasSaliency || !$("show-saliency").checked; });
    $("saliency-opacity").addEventListener("input", () => { $("img-saliency").style.opacity = $("saliency-opacity").value; });
    $("img-saliency").style.opacity = $("saliency-opacity").value;
    $("slice").addEventListener("input", () => {
      state.slice = Number($("slice").value);
      $("slice-value").textContent = $("slice").value;
      requestEdit();
      requestInterpolation();
    });
    for (const id of ["interp-a", "interp-b", "interp-t"]) $(id).addEventListener("input", requestInterpolation);
    $("export-png").addEventListener("click", exportPng);
    $("export-json").addEventListener("click", exportJson);
    if (state.items.length) { chooseItem(state.items[0].id); requestInterpolation(); }
    else setStatus("no held-out images; upload a case");
  } catch (error) {
    setStatus(`could not start: ${error.message}`, true);
  }
}

main();
