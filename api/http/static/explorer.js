// Candor explorer: a small page over the public API (no framework, no CDN). The key stays in this tab.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let version = null; // the described model version: {name, version, flavour, manifest, methods, feature_order}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + $("key").value.trim() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json();
  if (!response.ok) {
    const fields = data.errors ? " " + JSON.stringify(data.errors) : "";
    throw new Error(`${response.status} ${data.title || ""}: ${data.detail || ""}${fields}`);
  }
  return data;
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function element(tag, attributes, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function display(feature) {
  const spec = (version.manifest.features || []).find((f) => f.name === feature);
  return (spec && spec.display_name) || feature;
}

function round(x, digits = 3) {
  return typeof x === "number" ? Number(x.toFixed(digits)).toString() : String(x);
}

async function connect() {
  try {
    status("connecting...");
    const listing = await api("GET", "/v1/models");
    const select = $("model");
    select.replaceChildren(...listing.models.map((m) => element("option", { value: m.name }, m.name)));
    select.disabled = false;
    status(`${listing.models.length} models`);
    if (listing.models.length) await chooseModel();
  } catch (error) {
    status(error.message, true);
  }
}

let choosing = 0; // the latest model choice; answers to earlier ones are dropped

async function chooseModel() {
  const name = $("model").value;
  const ticket = ++choosing;
  let described;
  try {
    described = await api("GET", `/v1/models/${encodeURIComponent(name)}/versions/production`);
  } catch (error) {
    described = await api("GET", `/v1/models/${encodeURIComponent(name)}/versions/latest`);
  }
  if (ticket !== choosing) return;
  version = described;
  $("results").hidden = true;
  $("tabular").hidden = version.flavour !== "tabular";
  $("text").hidden = version.flavour !== "text";
  if (version.flavour === "tabular") buildForm();
  status(`${version.name} v${version.version} (${version.flavour}): ${version.methods.join(", ")}`);
}

function buildForm() {
  const form = $("instance-form");
  form.replaceChildren();
  for (const name of version.feature_order) {
    const spec = (version.manifest.features || []).find((f) => f.name === name) || { name, type: "numeric" };
    const id = "feature-" + name;
    const label = element("label", { for: id }, display(name) + (spec.unit ? ` (${spec.unit})` : ""));
    let input;
    if (spec.categories) {
      input = element("select", { id, name });
      for (const category of spec.categories) input.appendChild(element("option", { value: String(category) }, String(category)));
    } else {
      input = element("input", { id, name, type: "number", step: spec.step || "any" });
      if (spec.min !== undefined) input.min = spec.min;
      if (spec.max !== undefined) input.max = spec.max;
      const middle = spec.min !== undefined && spec.max !== undefined ? (spec.min + spec.max) / 2 : 0;
      input.value = spec.step ? Math.round(middle / spec.step) * spec.step : middle;
    }
    const cell = element("div");
    cell.append(label, input);
    form.appendChild(cell);
  }
}

function instanceFromForm() {
  const row = {};
  for (const name of version.feature_order) {
    const spec = (version.manifest.features || []).find((f) => f.name === name) || {};
    const raw = $("feature-" + name).value;
    if (spec.categories) {
      const match = spec.categories.find((c) => String(c) === raw);
      row[name] = match === undefined ? raw : match;
    } else {
      row[name] = Number(raw);
    }
  }
  return row;
}

function showPrediction(prediction) {
  const probabilities = prediction.probabilities || {};
  const parts = Object.entries(probabilities).map(([label, p]) => `${label} ${round(p, 3)}`);
  $("prediction").textContent = prediction.label !== undefined
    ? `${prediction.label} (${parts.join(", ")})`
    : `value ${round(prediction.value)}`;
}

async function explainTabular() {
  const row = instanceFromForm();
  const base = `/v1/models/${encodeURIComponent(version.name)}/versions/${version.version}`;
  $("results").hidden = false;
  for (const card of ["waterfall-card", "reasons-card", "counterfactuals-card", "words-card", "attention-card"]) $(card).hidden = true;
  $("truncation").hidden = true;
  try {
    status("explaining...");
    const shap = await api("POST", `${base}/explain/shap?narrative=true`, { instances: [row] });
    const result = shap.results[0];
    showPrediction(result.prediction);
    drawWaterfall(result, shap.output);
    if (version.methods.includes("reasons")) {
      const reasons = (await api("POST", `${base}/explain/reasons`, { instances: [row] })).results[0];
      showReasons(reasons);
    }
    if (version.methods.includes("counterfactuals")) {
      const cfs = (await api("POST", `${base}/explain/counterfactuals`, { instances: [row], total_cfs: 3 })).results[0];
      showCounterfactuals(cfs);
    }
    status(`explained (record ${shap.id})`);
  } catch (error) {
    status(error.message, true);
  }
}

function drawWaterfall(result, output) {
  const items = [...result.attributions].sort((a, b) => Math.abs(b.attribution) - Math.abs(a.attribution)).slice(0, 10);
  const rest = result.output_value - result.base_value - items.reduce((s, a) => s + a.attribution, 0);
  const bars = items.map((a) => ({ label: `${display(a.feature)} = ${a.value}`, value: a.attribution }));
  if (Math.abs(rest) > 1e-9) bars.push({ label: "all other features", value: rest });
  const width = 860, row = 26, left = 330, top = 30, height = top + row * (bars.length + 2) + 10;
  let running = result.base_value;
  const points = [result.base_value, result.output_value];
  for (const bar of bars) { running += bar.value; points.push(running); }
  const lo = Math.min(...points), hi = Math.max(...points), span = hi - lo || 1;
  const x = (v) => left + ((v - lo) / span) * (width - left - 60);
  const svg = element("svg:svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "SHAP waterfall" });
  svg.appendChild(element("svg:text", { x: 8, y: 18, "font-size": 13 }, `base value ${round(result.base_value)} (${output.space}, target ${result.target})`));
  running = result.base_value;
  bars.forEach((bar, i) => {
    const y = top + i * row;
    const start = running, end = running + bar.value;
    running = end;
    const text = element("svg:text", { x: 8, y: y + 17, "font-size": 13 }, bar.label.length > 44 ? bar.label.slice(0, 43) + "\u2026" : bar.label);
    text.appendChild(element("svg:title", {}, bar.label));
    svg.appendChild(text);
    svg.appendChild(element("svg:rect", {
      x: Math.min(x(start), x(end)), y: y + 4, width: Math.max(1, Math.abs(x(end) - x(start))), height: row - 8,
      fill: bar.value >= 0 ? "#c0392b" : "#2c6fbb",
    }));
    svg.appendChild(element("svg:text", { x: Math.max(x(start), x(end)) + 4, y: y + 17, "font-size": 12 }, (bar.value >= 0 ? "+" : "") + round(bar.value)));
  });
  const y = top + bars.length * row + 20;
  svg.appendChild(element("svg:text", { x: 8, y, "font-size": 13, "font-weight": "bold" }, `prediction ${round(result.output_value)} (${output.space})`));
  $("waterfall").replaceChildren(svg);
  $("waterfall-note").textContent = result.summary || "";
  $("waterfall-card").hidden = false;
}

function showReasons(result) {
  const list = $("reasons");
  list.replaceChildren();
  for (const reason of result.reasons || []) {
    list.appendChild(element("li", {}, `${reason.code}: ${reason.text} (${display(reason.feature)} = ${reason.value})`));
  }
  if (!(result.reasons || []).length) list.appendChild(element("li", {}, `No adverse-action reasons (${result.status}).`));
  $("reasons-card").hidden = false;
}

function showCounterfactuals(result) {
  const box = $("counterfactuals");
  box.replaceChildren();
  const found = result.counterfactuals || [];
  if (!found.length) box.appendChild(element("p", {}, `None found: ${result.reason || result.status}.`));
  found.forEach((cf, i) => {
    const table = element("table", { class: "counterfactual" });
    const head = element("tr");
    head.append(element("th", {}, `Option ${i + 1}: ${cf.prediction.label}`), element("th", {}, "now"), element("th", {}, "would be"));
    table.appendChild(head);
    for (const change of cf.changes) {
      const line = element("tr");
      line.append(element("td", {}, display(change.feature)), element("td", {}, String(change.from)), element("td", {}, String(change.to)));
      table.appendChild(line);
    }
    box.appendChild(table);
  });
  $("counterfactuals-card").hidden = false;
}

async function explainText() {
  const text = $("text-input").value;
  const base = `/v1/models/${encodeURIComponent(version.name)}/versions/${version.version}`;
  $("results").hidden = false;
  for (const card of ["waterfall-card", "reasons-card", "counterfactuals-card"]) $(card).hidden = true;
  $("truncation").hidden = true;
  try {
    status("explaining...");
    const attributions = await api("POST", `${base}/explain/attributions`, { instances: [{ text }], n_steps: 32, truncate: true });
    const result = attributions.results[0];
    showPrediction(result.prediction);
    showTruncation(text, result);
    showWords(text, result, attributions.output);
    const attention = await api("POST", `${base}/explain/attention`, { instances: [{ text }], aggregate: "mean", truncate: true });
    drawAttention(attention.results[0]);
    status(`explained (record ${attributions.id})`);
  } catch (error) {
    status(error.message, true);
  }
}

function showWords(text, result, output) {
  const words = result.words || [];
  const scale = Math.max(1e-12, ...words.map((w) => Math.abs(w.attribution)));
  const box = $("words");
  box.replaceChildren();
  let cursor = 0;
  for (const word of words) {
    if (word.start > cursor) box.appendChild(document.createTextNode(text.slice(cursor, word.start)));
    const strength = Math.abs(word.attribution) / scale;
    const colour = word.attribution >= 0 ? `rgba(192, 57, 43, ${strength})` : `rgba(44, 111, 187, ${strength})`;
    box.appendChild(element("span", { class: "word", style: `background:${colour}`, title: round(word.attribution, 4) }, text.slice(word.start, word.end)));
    cursor = word.end;
  }
  const read = readUpTo(result);
  if (cursor < read) box.appendChild(document.createTextNode(text.slice(cursor, read)));
  if (read < text.length) {
    const rest = text.slice(Math.max(cursor, read));
    box.appendChild(element("span", { class: result.truncated ? "cut" : "", title: result.truncated ? "cut: not read by the model" : "" }, rest));
  }
  $("words-target").textContent = (output && output.target) || result.prediction.label;
  $("words-card").hidden = false;
}

// The character offset where the model stopped reading: the end of the last non-special token.
function readUpTo(result) {
  if (!result.truncated) return Infinity;
  const read = result.tokens.filter((t) => !t.special);
  return read.length ? read[read.length - 1].end : 0;
}

// A text longer than the model's limit is cut by the API (truncate: true); the page says so, and how much.
function showTruncation(text, result) {
  const notice = $("truncation");
  if (!result.truncated) {
    notice.hidden = true;
    notice.textContent = "";
    return;
  }
  const explained = result.tokens.length;
  const cutAt = readUpTo(result);
  notice.textContent = `Text too long for this model: explained the first ${explained} of ${result.original_tokens} ` +
    `tokens (up to character ${cutAt} of ${text.length}); the rest was cut and is shown struck through.`;
  notice.hidden = false;
}

function drawAttention(result) {
  const maps = result.attention || [];
  if (!maps.length) return;
  const weights = maps[maps.length - 1].weights;
  const tokens = result.tokens.map((t) => t.token);
  const cell = Math.max(6, Math.min(18, Math.floor(560 / tokens.length))), margin = 110;
  const size = margin + cell * tokens.length + 10;
  const svg = element("svg:svg", { width: size, height: size, viewBox: `0 0 ${size} ${size}`, role: "img", "aria-label": "attention heatmap" });
  const peak = Math.max(...weights.flat());
  weights.forEach((row, i) => row.forEach((w, j) => {
    svg.appendChild(element("svg:rect", { x: margin + j * cell, y: margin + i * cell, width: cell, height: cell, fill: `rgba(36, 81, 183, ${w / peak})` }));
  }));
  if (cell >= 9) {
    tokens.forEach((token, i) => {
      svg.appendChild(element("svg:text", { x: margin - 4, y: margin + i * cell + cell - 2, "font-size": cell - 2, "text-anchor": "end" }, token));
      svg.appendChild(element("svg:text", { x: 0, y: 0, "font-size": cell - 2, transform: `translate(${margin + j0(i, cell)}, ${margin - 4}) rotate(-60)` }, token));
    });
  }
  $("attention").replaceChildren(svg);
  $("attention-card").hidden = false;
}

function j0(i, cell) {
  return i * cell + cell - 2;
}

$("key").value = sessionStorage.getItem("candor-key") || "";
$("key").addEventListener("change", () => sessionStorage.setItem("candor-key", $("key").value.trim()));
$("connect-button").addEventListener("click", connect);
$("model").addEventListener("change", chooseModel);
$("explain-tabular").addEventListener("click", explainTabular);
$("explain-text").addEventListener("click", explainText);
