// The serving page: upload images to POST /predict, show the model card from GET /card.
// No framework and no build step. Every server call sends the API key (when one was given) as X-API-Key.
"use strict";

const state = { key: sessionStorage.getItem("apiKey") || "", card: null };
const $ = (selector) => document.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function authHeaders() {
  return state.key ? { "X-API-Key": state.key } : {};
}

// The server's own message: {"detail": ...} (FastAPI) or {"error": ...} (V2), else the status line.
async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.detail || body.error || JSON.stringify(body);
  } catch {
    return `${response.status} ${response.statusText}`.trim();
  }
}

function askForKey(message) {
  $("#key-panel").hidden = false;
  $("#key-message").textContent = message;
  $("#key-input").focus();
}

function percent(value) {
  return value === null || value === undefined ? "n/a" : `${(100 * value).toFixed(2)} %`;
}

function number(value, digits = 2) {
  return value === null || value === undefined ? "n/a" : Number(value).toFixed(digits);
}

// --- the model card --------------------------------------------------------------------------------
async function loadCard() {
  let response;
  try {
    response = await fetch("/card", { headers: authHeaders() });
  } catch (error) {
    $("#card-status").textContent = `The server did not answer: ${error.message}`;
    return;
  }
  if (response.status === 401) {
    const message = await errorMessage(response);
    askForKey(state.key ? message : "Enter the API key to use this server.");
    $("#subtitle").textContent = "Waiting for the API key.";
    return;
  }
  if (!response.ok) {
    $("#card-status").textContent = `The model card could not be loaded: ${await errorMessage(response)}`;
    return;
  }
  state.card = await response.json();
  $("#key-panel").hidden = true;
  showCard(state.card);
}

function fact(term, ...value) {
  $("#facts").append(el("dt", { text: term }), el("dd", {}, ...value));
}

function parityText(card) {
  const parity = card.parity;
  if (!parity) return el("span", { text: "not recorded" });
  const verdict = el("span", { class: parity.passed ? "pass" : "fail", text: parity.passed ? "passed" : "failed" });
  const details = [
    parity.top1_agreement !== null ? `top-1 agreement ${percent(parity.top1_agreement)}` : null,
    parity.max_abs_diff !== null ? `max |Δlogit| ${Number(parity.max_abs_diff).toExponential(2)}` : null,
    parity.samples ? `${parity.samples} images` : null,
    parity.reason,
  ].filter(Boolean);
  return el("span", {}, verdict, details.length ? ` (${details.join(", ")})` : "");
}

function showCard(card) {
  document.title = `${card.model_name} · image classifier`;
  $("#title").textContent = card.model_name;
  $("#subtitle").textContent = `${card.classes.length} classes, served by ${card.engine}`;
  $("#card-status").textContent = card.benchmark ? "" : "This bundle carries no benchmark.json.";
  $("#facts").replaceChildren();
  fact("Engine", `${card.engine}${card.engine === card.chosen ? " (chosen by the deploy step)" : ` (the deploy step chose ${card.chosen})`}`);
  if (card.chosen_reason) fact("Why", card.chosen_reason);
  fact("Precision", card.precision || "n/a");
  const data = card.parity && card.parity.data ? ` on ${card.parity.data}` : "";
  fact("Test accuracy", `${percent(card.test_accuracy)}${data}` +
    (card.reference_accuracy !== null ? ` (eager fp32: ${percent(card.reference_accuracy)})` : ""));
  fact("Parity vs eager fp32", parityText(card));
  fact("Latency (p50)", card.latency_ms ? `${number(card.latency_ms.p50, 3)} ms at batch ${card.latency_ms.batch_size}` : "n/a");
  fact("Throughput", card.throughput ? `${number(card.throughput.images_per_s, 0)} images/s at batch ${card.throughput.batch_size}` : "n/a");
  fact("Input", `${card.input.channels}×${card.input.height}×${card.input.width}`);
  $("#classes").replaceChildren(...card.classes.map((name) => el("li", { text: name })));

  const topk = $("#topk");
  topk.replaceChildren();
  for (let k = 1; k <= card.max_topk; k += 1) topk.append(el("option", { value: String(k), text: String(k) }));
  topk.value = String(Math.min(card.max_topk, Math.max(card.topk, 3)));

  $("#pictures-note").textContent = card.missing_pictures.length
    ? `The bundle does not carry ${card.missing_pictures.join(", ")}.`
    : "";
  $("#pictures").replaceChildren();
  for (const picture of card.pictures) showPicture(picture);
}

async function showPicture(picture) {
  const figure = el("figure", { "data-picture": picture.name }, el("figcaption", { text: picture.title }));
  $("#pictures").append(figure);
  const response = await fetch(picture.url, { headers: authHeaders() });  // an <img src> could not send the key
  if (!response.ok) {
    figure.append(el("p", { class: "error", text: await errorMessage(response) }));
    return;
  }
  const image = el("img", { alt: picture.title, src: URL.createObjectURL(await response.blob()) });
  figure.prepend(image);
}

// --- predictions -----------------------------------------------------------------------------------
function resultItem(file) {
  const image = el("img", { alt: "", src: URL.createObjectURL(file) });
  image.addEventListener("error", () => { image.style.visibility = "hidden"; });
  const body = el("div", {}, el("div", { class: "name", text: file.name }), el("div", { class: "meta", text: "predicting…" }));
  const item = el("li", { class: "result", "data-file": file.name, "data-state": "pending" }, image, body);
  $("#results").prepend(item);
  return item;
}

function showPrediction(item, prediction, engine, milliseconds) {
  const rows = prediction.topk.map((entry) => {
    const fill = el("span");
    fill.style.width = `${(100 * entry.score).toFixed(1)}%`;  // CSSOM, which the page's CSP allows
    return el("div", { class: "bar-row" },
      el("span", { class: "label", text: entry.label }),
      el("span", { class: "bar" }, fill),
      el("span", { class: "prob", text: percent(entry.score) }));
  });
  const meta = item.querySelector(".meta");
  meta.replaceChildren("engine ", el("span", { class: "engine", text: engine }),
    " · ", el("span", { class: "time", text: `${milliseconds.toFixed(1)} ms` }));
  meta.after(...rows);
  item.dataset.state = "done";
}

function showError(item, message) {
  item.querySelector(".meta").replaceWith(el("div", { class: "error", text: message }));
  item.dataset.state = "error";
}

async function predict(file) {
  const item = resultItem(file);
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("topk", $("#topk").value || "1");
  const started = performance.now();
  let response;
  try {
    response = await fetch("/predict", { method: "POST", headers: authHeaders(), body: form });
  } catch (error) {
    showError(item, `The server did not answer: ${error.message}`);
    return;
  }
  const milliseconds = performance.now() - started;
  if (!response.ok) {
    const message = await errorMessage(response);
    showError(item, `${response.status}: ${message}`);
    if (response.status === 401) askForKey(message);
    return;
  }
  const engine = response.headers.get("X-Engine") || (state.card ? state.card.engine : "unknown");
  showPrediction(item, await response.json(), engine, milliseconds);
}

function predictAll(files) {
  return Promise.all(Array.from(files).map(predict));  // sent together: the server batches them
}

// --- wiring ----------------------------------------------------------------------------------------
function start() {
  const drop = $("#drop");
  const input = $("#files");
  input.addEventListener("change", () => {
    predictAll(input.files);
    input.value = "";  // picking the same file again uploads it again
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    predictAll(event.dataTransfer.files);
  });
  $("#clear").addEventListener("click", () => $("#results").replaceChildren());
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("#key-input").value;
    sessionStorage.setItem("apiKey", state.key);
    loadCard();
  });
  loadCard();
}

start();
