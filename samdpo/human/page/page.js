"use strict";
// The grading page: keyboard first (digits, arrows, Enter, s, u, Backspace), the mouse too.
// window.samdpoTimings holds, per decision, the ms from the deciding key press or click to the next pair drawn.
const mode = document.body.dataset.mode;
const ui = { pair: null, count: 4, grades: [], order: [], focus: 0, shownAt: 0, busy: false, paces: [] };
window.samdpoTimings = [];
let pressedAt = null;

const el = (id) => document.getElementById(id);

function prefetch(pair) {
  if (!pair) return;
  for (const url of [pair.image, ...pair.candidates]) new Image().src = url;
}

async function call(url, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(url, options);
  const state = await response.json();
  if (!response.ok && response.status !== 409) {
    el("status").textContent = state.error || response.statusText;
    return null;
  }
  return state;
}

function buildCandidates(count) {
  const box = el("candidates");
  box.textContent = "";
  for (let k = 0; k < count; k++) {
    const figure = document.createElement("figure");
    figure.className = "candidate";
    figure.id = `panel-${k}`;
    const img = document.createElement("img");
    img.id = `candidate-${k}`;
    img.alt = `candidate ${k + 1}`;
    const caption = document.createElement("figcaption");
    caption.innerHTML = `candidate ${k + 1}, zoomed <span class="badge" id="badge-${k}"></span>`;
    figure.append(img, caption);
    if (mode === "score") {
      const grades = document.createElement("div");
      grades.className = "grades";
      for (let g = 1; g <= 4; g++) {
        const button = document.createElement("button");
        Object.assign(button, { type: "button", textContent: g, tabIndex: -1 });
        button.dataset.grade = g;
        button.addEventListener("click", (event) => { event.stopPropagation(); ui.focus = k; setGrade(g); });
        grades.append(button);
      }
      figure.append(grades);
    }
    figure.addEventListener("click", () => { if (mode === "rank") pick(k); else { ui.focus = k; paint(); } });
    box.append(figure);
  }
}

function paint() {
  for (let k = 0; k < ui.count; k++) {
    el(`panel-${k}`).classList.toggle("focus", mode === "score" && k === ui.focus);
    const position = ui.order.indexOf(k);
    el(`badge-${k}`).textContent = mode === "rank" ? (position < 0 ? "" : `#${position + 1}`) : (ui.grades[k] || "");
    for (const button of el(`panel-${k}`).querySelectorAll("button")) {
      button.classList.toggle("on", Number(button.dataset.grade) === ui.grades[k]);
    }
  }
}

function report(progress, message) {
  const { done, total } = progress;
  const recent = ui.paces.slice(-20);
  const pace = recent.length ? recent.reduce((a, b) => a + b, 0) / recent.length : null;
  const left = pace === null ? "" : `, about ${Math.ceil((pace * (total - done)) / 60)} min left at your pace`;
  el("status").textContent = message || `${done} / ${total} decided${left}`;
}

async function show(state) {
  if (!state) return;
  Object.assign(ui, { pair: state.pair, count: state.count, progress: state.progress, order: [], focus: 0 });
  ui.grades = new Array(state.count).fill(0);
  const { done, total } = state.progress;
  el("bar").style.width = total ? `${(100 * done) / total}%` : "100%";
  el("pair").hidden = !state.pair;
  el("finished").hidden = Boolean(state.pair);
  report(state.progress, state.error);
  if (!state.pair) { drawn("done"); return; }
  if (el("candidates").children.length !== state.count) buildCandidates(state.count);
  const images = [el("prompt"), ...state.pair.candidates.map((_, k) => el(`candidate-${k}`))];
  const urls = [state.pair.image, ...state.pair.candidates];
  const decoded = images.map((img, i) => { img.src = urls[i]; return img.decode().catch(() => null); });
  el("class-name").textContent = state.pair.class_name;
  el("sample").textContent = `image ${state.pair.sample_id}, pair ${state.pair.position + 1}`;
  paint();
  const id = state.pair.id;
  await Promise.all(decoded);
  if (ui.pair && ui.pair.id === id) drawn(id);
  prefetch(state.next);
}

function drawn(id) {
  requestAnimationFrame(() => {
    ui.shownAt = performance.now();
    if (pressedAt !== null) { window.samdpoTimings.push(ui.shownAt - pressedAt); pressedAt = null; }
    document.body.dataset.shown = id;
  });
}

function setGrade(grade) {
  if (mode !== "score" || !ui.pair) return;
  ui.grades[ui.focus] = grade;
  ui.focus = Math.min(ui.focus + 1, ui.count - 1);
  paint();
}

function pick(k) {
  if (mode !== "rank" || !ui.pair || ui.order.includes(k)) return;
  ui.order.push(k);
  if (ui.order.length === ui.count - 1) ui.order.push([...Array(ui.count).keys()].find((j) => !ui.order.includes(j)));
  paint();
}

async function decide(choice) {
  if (ui.busy || !ui.pair) { pressedAt = null; return; }
  ui.busy = true;
  const seconds = (performance.now() - ui.shownAt) / 1000;
  try {
    const state = await call("/api/decide", { pair: ui.pair.id, seconds, ...choice });
    if (!state) pressedAt = null;
    else if (!state.error) ui.paces.push(seconds);
    await show(state);
  } finally {
    ui.busy = false;
  }
}

function submit() {
  if (mode === "score" && ui.grades.every((g) => g > 0)) return decide({ grades: ui.grades });
  if (mode === "rank" && ui.order.length === ui.count) return decide({ order: ui.order });
  pressedAt = null;
  report(ui.progress, mode === "score" ? "give every candidate a grade 1-4 first" : "order every candidate first");
}

async function undo() {
  if (ui.busy) return;
  ui.busy = true;
  try { await show(await call("/api/undo", {})); } finally { ui.busy = false; }
}

function clearInput() {
  if (mode === "rank") ui.order = [];
  else { ui.grades.fill(0); ui.focus = 0; }
  paint();
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const digit = Number(event.key);
  if (Number.isInteger(digit) && digit >= 1 && digit <= Math.max(4, ui.count)) {
    if (mode === "score" && digit <= 4) setGrade(digit);
    if (mode === "rank" && digit <= ui.count) pick(digit - 1);
  } else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
    ui.focus = Math.max(0, Math.min(ui.count - 1, ui.focus + (event.key === "ArrowRight" ? 1 : -1)));
    paint();
  } else if (event.key === "Enter") {
    pressedAt = performance.now();
    submit();
  } else if (event.key === "s") {
    pressedAt = performance.now();
    decide({ skip: true });
  } else if (event.key === "u") {
    undo();
  } else if (event.key === "Backspace") {
    clearInput();
  } else {
    return;
  }
  event.preventDefault();
});

function buttons() {
  const keys = mode === "score"
    ? "<kbd>1</kbd>-<kbd>4</kbd> grade the framed candidate (1 poor, 4 good), <kbd>&larr;</kbd> <kbd>&rarr;</kbd> move the frame"
    : "<kbd>1</kbd>-<kbd>4</kbd> or a click: the next best candidate";
  el("help").innerHTML = `${keys}, <kbd>Enter</kbd> submit, <kbd>s</kbd> skip, <kbd>u</kbd> undo the last decision,
    <kbd>Backspace</kbd> clear this pair. <button id="submit" type="button">submit</button>
    <button id="skip" type="button">skip</button> <button id="undo" type="button">undo</button>`;
  el("submit").addEventListener("click", () => { pressedAt = performance.now(); submit(); });
  el("skip").addEventListener("click", () => { pressedAt = performance.now(); decide({ skip: true }); });
  el("undo").addEventListener("click", undo);
}

buttons();
call("/api/state").then(show);
