// The label page: one frame at a time, keys to tick labels, Space to save and go on.
// Talks to the server's JSON interface only (ccfsort/label/app.py).
"use strict";

const state = { meta: null, frame: null, chosen: new Set(), busy: false };
const $ = (id) => document.getElementById(id);

function normalized(name) {
  return String(name).toLowerCase().replace(/[^0-9a-z]+/g, "_").replace(/^_+|_+$/g, "");
}

async function call(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function status(text, kind) {
  const line = $("status");
  line.textContent = text;
  line.className = "status" + (kind ? " " + kind : "");
}

function groupOf(name) {
  return state.meta.groups.find((group) => group.includes(name)) || null;
}

function toggle(name) {
  if (!state.frame) return;
  if (state.chosen.has(name)) {
    state.chosen.delete(name);
  } else {
    const group = groupOf(name);
    if (group) group.forEach((other) => state.chosen.delete(other));
    state.chosen.add(name);
  }
  drawLabels();
}

function probabilityOf(name) {
  const p = state.frame && state.frame.probabilities;
  if (!p) return null;
  if (name in p) return p[name];
  const key = normalized(name);
  const match = Object.keys(p).find((other) => normalized(other) === key);
  return match === undefined ? null : p[match];
}

function labelButton(name) {
  const meta = state.meta;
  const i = meta.names.indexOf(name);
  const button = document.createElement("button");
  button.type = "button";
  button.className = "toggle" + (state.chosen.has(name) ? " on" : "");
  button.dataset.name = name;
  button.setAttribute("aria-pressed", state.chosen.has(name) ? "true" : "false");
  const key = document.createElement("kbd");
  key.textContent = meta.keys[i] || "";
  const title = document.createElement("span");
  title.textContent = meta.display_names[i];
  button.append(key, title);
  const p = probabilityOf(name);
  const prob = document.createElement("span");
  prob.className = "prob";
  if (p !== null) {
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("i");
    fill.style.width = (100 * p).toFixed(1) + "%";
    bar.append(fill);
    const value = document.createElement("span");
    value.textContent = p.toFixed(2);
    prob.append(bar, value);
    prob.title = "the model's probability";
  }
  button.append(prob);
  button.addEventListener("click", () => toggle(name));
  return button;
}

function drawLabels() {
  const box = $("labels");
  box.replaceChildren();
  const grouped = new Set(state.meta.groups.flat());
  for (const group of state.meta.groups) {
    const part = document.createElement("div");
    part.className = "group";
    const title = document.createElement("div");
    title.className = "group-title";
    title.textContent = "one of";
    part.append(title, ...group.filter((n) => state.meta.names.includes(n)).map(labelButton));
    box.append(part);
  }
  const free = state.meta.names.filter((name) => !grouped.has(name));
  if (free.length) {
    const part = document.createElement("div");
    part.className = "group";
    const title = document.createElement("div");
    title.className = "group-title";
    title.textContent = state.meta.groups.length ? "any of" : "labels";
    part.append(title, ...free.map(labelButton));
    box.append(part);
  }
  $("model-note").hidden = !(state.frame && state.frame.probabilities);
}

function drawProgress(progress) {
  const line = $("progress");
  line.replaceChildren();
  const count = document.createElement("span");
  count.className = "count";
  const share = progress.total ? (100 * progress.labelled) / progress.total : 0;
  count.textContent = `${progress.labelled} / ${progress.total} labelled (${share.toFixed(1)} %)`;
  line.append(count);
  state.meta.names.forEach((name, i) => {
    const item = document.createElement("span");
    item.className = "class";
    const value = document.createElement("b");
    value.textContent = progress.per_class[name];
    item.append(state.meta.display_names[i] + " ", value);
    line.append(item);
  });
}

function show(frame) {
  drawProgress(frame.progress);
  if (frame.index === null) {
    state.frame = null;
    $("frame-title").textContent = "Every frame is labelled.";
    $("frame-title").className = "done";
    $("frame-note").textContent = `saved in ${state.meta.out}`;
    $("image").removeAttribute("src");
    $("map").removeAttribute("src");
    drawLabels();
    return;
  }
  state.frame = frame;
  state.chosen = new Set(frame.labels || []);
  $("frame-title").textContent = `row ${frame.index}`;
  $("frame-title").className = "";
  const notes = [`${frame.position_name} ${frame.position}`];
  if (frame.uncertainty !== null) notes.push(`uncertainty ${frame.uncertainty.toFixed(2)}`);
  if (frame.labels) notes.push("labelled before: saving replaces it");
  $("frame-note").textContent = notes.join(" · ");
  $("image").src = frame.image;
  $("map").src = frame.map;
  drawLabels();
}

async function guarded(action) {
  if (state.busy) return;
  state.busy = true;
  try {
    await action();
  } catch (error) {
    status(error.message, "error");
  } finally {
    state.busy = false;
  }
}

function saveAndNext() {
  return guarded(async () => {
    if (!state.frame) return;
    const index = state.frame.index;
    const labels = state.meta.names.filter((name) => state.chosen.has(name));
    await call("POST", "/api/labels", { index, labels });
    const shown = labels.map((name) => state.meta.display_names[state.meta.names.indexOf(name)]);
    status(`saved row ${index}: ${shown.join(", ") || "no label"}`, "ok");
    show(await call("GET", "/api/next"));
  });
}

function undo() {
  return guarded(async () => {
    const result = await call("POST", "/api/undo");
    if (result.index === null) {
      status("nothing to undo in this session", "");
      return;
    }
    show(await call("GET", `/api/frame/${result.index}`));
    status(`took back row ${result.index}`, "ok");
  });
}

function clearTicks() {
  state.chosen.clear();
  drawLabels();
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  if (key === " " || key === "Enter") {
    event.preventDefault();
    saveAndNext();
  } else if (key === "Backspace") {
    event.preventDefault();
    undo();
  } else if (key === "Escape") {
    clearTicks();
  } else if (state.meta) {
    const i = state.meta.keys.indexOf(key.toLowerCase());
    if (i >= 0) {
      event.preventDefault();
      toggle(state.meta.names[i]);
    }
  }
}

async function start() {
  state.meta = await call("GET", "/api/meta");
  const run = state.meta.run ? ` · run ${state.meta.run}` : "";
  $("store").textContent = `${state.meta.store}${run} · ${state.meta.order} · saving to ${state.meta.out}`;
  document.addEventListener("keydown", onKey);
  $("save").addEventListener("click", saveAndNext);
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearTicks);
  show(await call("GET", "/api/next"));
}

start().catch((error) => status(error.message, "error"));
