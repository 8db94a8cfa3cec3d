// The demo page: everything is served by the app (no CDN). It calls POST /v1/extract and
// shows the text with each entity highlighted in its type's colour (score on hover).
"use strict";

const PALETTE = ["#ffd166", "#8ecae6", "#b5e48c", "#f4a3c0", "#cdb4db", "#ffb703",
                 "#90e0ef", "#e9c46a", "#a8dadc", "#f6bd60"];
const $ = (id) => document.getElementById(id);
let datasets = {};

function colourOf(types, type) {
  return PALETTE[Math.max(0, types.indexOf(type)) % PALETTE.length];
}

function requestedTypes() {
  const dataset = $("dataset").value;
  if (dataset) return { dataset };
  const types = $("types").value.split(/[,，]/).map((t) => t.trim()).filter((t) => t);
  return { types };
}

// Text with <mark> elements; overlapping entities: the earlier (then longer) one wins.
function render(text, entities, types) {
  const box = $("highlighted");
  box.textContent = "";
  const chars = Array.from(text);  // offsets are code points (Python str indices)
  let cursor = 0;
  const sorted = entities.slice().sort((a, b) => a.start - b.start || b.end - a.end);
  for (const entity of sorted) {
    if (entity.start < cursor) continue;
    box.appendChild(document.createTextNode(chars.slice(cursor, entity.start).join("")));
    const mark = document.createElement("mark");
    mark.className = "entity";
    mark.dataset.type = entity.type;
    mark.style.background = colourOf(types, entity.type);
    mark.title = `${entity.type} · score ${entity.score.toFixed(3)}`;
    mark.textContent = chars.slice(entity.start, entity.end).join("");
    const label = document.createElement("sub");
    label.textContent = entity.type;
    mark.appendChild(label);
    box.appendChild(mark);
    cursor = entity.end;
  }
  box.appendChild(document.createTextNode(chars.slice(cursor).join("")));
  const legend = $("legend");
  legend.textContent = "";
  for (const type of types) {
    const chip = document.createElement("span");
    chip.style.background = colourOf(types, type);
    chip.textContent = type;
    legend.appendChild(chip);
  }
}

async function extract() {
  const status = $("status");
  status.className = "";
  status.textContent = "…";
  const text = $("text").value;
  const body = Object.assign({ text }, requestedTypes());
  try {
    const response = await fetch("/v1/extract", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    $("json").textContent = JSON.stringify(answer, null, 2);
    if (!response.ok) {
      const error = answer.error || {};
      status.className = "error";
      status.textContent = `${response.status}: ${error.field ? error.field + ": " : ""}${error.message}`;
      return;
    }
    const entities = answer.results[0].entities;
    render(text, entities, answer.types);
    status.textContent = `${entities.length} entit${entities.length === 1 ? "y" : "ies"}`;
  } catch (error) {
    status.className = "error";
    status.textContent = String(error);
  }
}

async function loadInfo() {
  try {
    const info = await (await fetch("/info")).json();
    datasets = info.datasets || {};
    const select = $("dataset");
    for (const name of Object.keys(datasets)) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = `${name}: ${datasets[name].join(", ")}`;
      select.appendChild(option);
    }
    $("model-status").textContent = info.ready ? "Model ready." : "Model warming up…";
  } catch (error) {
    $("model-status").textContent = "Could not reach /info.";
  }
}

$("dataset").addEventListener("change", () => {
  const name = $("dataset").value;
  if (name) $("types").value = datasets[name].join(",");
  $("types").disabled = Boolean(name);
});
$("extract").addEventListener("click", extract);
loadInfo();
