// Draw-a-digit page: pointer events (mouse, touch, pen) draw dark ink on a white pad; after a short
// pause the pad is sent as a PNG to /api/predict and the answer is shown as a label, ten bars and
// the 28x28 image the network actually saw.
"use strict";

const DEBOUNCE_MS = 150;
const PEN_WIDTH = 20;

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const seen = document.getElementById("seen");
const seenCtx = seen.getContext("2d");
const labelEl = document.getElementById("label");
const confidenceEl = document.getElementById("confidence");
const statusEl = document.getElementById("status");
const barsEl = document.getElementById("bars");

let drawing = false;
let hasInk = false;
let last = null;
let timer = null;
let generation = 0; // answers to superseded requests are dropped

function buildBars() {
  for (let digit = 0; digit < 10; digit++) {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.dataset.digit = String(digit);
    row.innerHTML =
      `<span class="bar-digit">${digit}</span>` +
      '<span class="bar-track"><span class="bar-fill"></span></span>' +
      '<span class="bar-value">&ndash;</span>';
    barsEl.appendChild(row);
  }
}

function resetPad() {
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#111111";
  ctx.fillStyle = "#111111";
  ctx.lineWidth = PEN_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
}

// The pad's pixels lie inside its border and may be drawn smaller than 280 (a phone).
function position(event) {
  const rect = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - rect.left - pad.clientLeft) * pad.width) / pad.clientWidth,
    y: ((event.clientY - rect.top - pad.clientTop) * pad.height) / pad.clientHeight,
  };
}

function dot(p) {
  ctx.beginPath();
  ctx.arc(p.x, p.y, PEN_WIDTH / 2, 0, 2 * Math.PI);
  ctx.fill();
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = position(event);
  dot(last);
  hasInk = true;
  schedule();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  event.preventDefault();
  const p = position(event);
  ctx.beginPath();
  ctx.moveTo(last.x, last.y);
  ctx.lineTo(p.x, p.y);
  ctx.stroke();
  last = p;
  schedule();
});

function stop() {
  if (!drawing) return;
  drawing = false;
  schedule();
}
pad.addEventListener("pointerup", stop);
pad.addEventListener("pointercancel", stop);
pad.addEventListener("pointerleave", stop);

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(predict, DEBOUNCE_MS);
}

function predict() {
  if (!hasInk) return;
  const mine = ++generation;
  pad.toBlob(async (blob) => {
    const form = new FormData();
    form.append("file", blob, "drawing.png");
    try {
      const response = await fetch("/api/predict", { method: "POST", body: form });
      const answer = await response.json();
      if (mine !== generation) return;
      if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
      show(answer);
    } catch (error) {
      if (mine !== generation) return;
      statusEl.textContent = `Could not classify: ${error.message}`;
      statusEl.classList.add("error");
    }
  }, "image/png");
}

function show(answer) {
  const probabilities = answer.probabilities;
  const label = answer.label;
  labelEl.textContent = String(label);
  confidenceEl.textContent = `${(100 * probabilities[label]).toFixed(1)}% sure`;
  statusEl.textContent = "Keep drawing, or clear and try another.";
  statusEl.classList.remove("error");
  barsEl.querySelectorAll(".bar-row").forEach((row, digit) => {
    const p = probabilities[digit];
    row.classList.toggle("top", digit === label);
    row.querySelector(".bar-fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".bar-value").textContent = `${(100 * p).toFixed(1)}%`;
  });
  if (answer.input) drawInput(answer.input);
}

function drawInput(pixels) {
  const image = seenCtx.createImageData(28, 28);
  for (let row = 0; row < 28; row++) {
    for (let col = 0; col < 28; col++) {
      const value = Math.round(255 * pixels[row][col]);
      const at = 4 * (row * 28 + col);
      image.data[at] = image.data[at + 1] = image.data[at + 2] = value;
      image.data[at + 3] = 255;
    }
  }
  seenCtx.putImageData(image, 0, 0);
}

function clearAll() {
  generation++;
  clearTimeout(timer);
  hasInk = false;
  resetPad();
  seenCtx.fillStyle = "#000000";
  seenCtx.fillRect(0, 0, 28, 28);
  labelEl.textContent = "\u2013";
  confidenceEl.innerHTML = "&nbsp;";
  statusEl.textContent = "Draw a digit 0\u20139 in the box.";
  statusEl.classList.remove("error");
  barsEl.querySelectorAll(".bar-row").forEach((row) => {
    row.classList.remove("top");
    row.querySelector(".bar-fill").style.width = "0";
    row.querySelector(".bar-value").textContent = "\u2013";
  });
}

document.getElementById("clear").addEventListener("click", clearAll);
buildBars();
clearAll();
