// The translation page: LibreTranslate's API (/frontend/settings, /languages, /translate).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { languages: [], charLimit: 0, timeout: 500, keyRequired: false, timer: 0, seq: 0,
                controller: null };

function names() {
  const out = { auto: "Detect language" };
  for (const l of state.languages) out[l.code] = l.name;
  return out;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function errorMessage(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = (body.error && body.error.message) || "";
  } catch (_) { /* not JSON */ }
  const retry = response.headers.get("Retry-After");
  const wait = retry ? ` Try again in ${retry} s.` : " Try again in a moment.";
  switch (response.status) {
    case 401: return `An API key is needed, or the one given is wrong. ${detail}`;
    case 413: return `The text is too large for the server. ${detail}`;
    case 429: return `The server is busy (too many requests).${wait}`;
    case 503: return `The service is not ready (${detail || "starting or stopping"}).${wait}`;
    case 504: return `The translation took too long.${wait}`;
    default:
      if (response.status >= 500) return `The server failed (${response.status}).${wait}`;
      return detail || `The request was refused (${response.status}).`;
  }
}

function fillTargets() {
  const source = $("source-lang").value;
  const select = $("target-lang");
  const previous = select.value;
  let targets;
  if (source === "auto") {
    targets = [...new Set(state.languages.flatMap((l) => l.targets))].sort();
  } else {
    const lang = state.languages.find((l) => l.code === source);
    targets = lang ? lang.targets : [];
  }
  const label = names();
  select.replaceChildren(...targets.map((code) => new Option(label[code] || code, code)));
  if (targets.includes(previous)) select.value = previous;
}

function updateCount() {
  const n = $("source-text").value.length;
  const count = $("char-count");
  count.textContent = `${n} / ${state.charLimit}`;
  const over = state.charLimit && n > state.charLimit;
  count.classList.toggle("over", Boolean(over));
  return !over;
}

function clearOutput() {
  $("target-text").value = "";
  $("alternatives").replaceChildren();
  $("detected").textContent = "";
  $("detected").dataset.code = "";
  $("copy").disabled = true;
}

async function translate() {
  window.clearTimeout(state.timer);
  const q = $("source-text").value;
  if (!q.trim()) { clearOutput(); showError(""); return; }
  if (!updateCount()) {
    showError(`The text has ${q.length} characters; the limit is ${state.charLimit}. ` +
              "Shorten it to translate.");
    return;
  }
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  const seq = ++state.seq;
  const body = { q, source: $("source-lang").value, target: $("target-lang").value,
                 format: "text", alternatives: 2 };
  const key = $("api-key").value.trim();
  if (key) body.api_key = key;
  $("status").textContent = "Translating…";
  try {
    const response = await fetch("/translate", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (seq !== state.seq) return;
    if (!response.ok) { showError(await errorMessage(response)); return; }
    const data = await response.json();
    if (seq !== state.seq) return;
    showError("");
    $("target-text").value = data.translatedText;
    $("copy").disabled = false;
    const alts = (data.alternatives || []).filter((a) => a !== data.translatedText);
    $("alternatives").replaceChildren(...alts.map((a) => {
      const li = document.createElement("li");
      li.textContent = a;
      return li;
    }));
    const found = data.detectedLanguage;
    $("detected").dataset.code = found ? found.language : "";
    $("detected").textContent = found
      ? `Detected: ${names()[found.language] || found.language} (${Math.round(found.confidence)}%)`
      : "";
  } catch (err) {
    if (err.name === "AbortError") return;
    if (seq === state.seq) showError("The server cannot be reached. Check the connection.");
  } finally {
    if (seq === state.seq) $("status").textContent = "";
  }
}

function schedule() {
  updateCount();
  window.clearTimeout(state.timer);
  if ($("live").checked) state.timer = window.setTimeout(translate, state.timeout);
}

function swap() {
  const source = $("source-lang");
  const target = $("target-lang");
  let from = source.value;
  if (from === "auto") {
    const shown = $("detected").dataset.code;
    if (!shown) return;
    from = shown;
  }
  const to = target.value;
  source.value = to;
  fillTargets();
  if ([...target.options].some((o) => o.value === from)) target.value = from;
  const translated = $("target-text").value;
  if (translated) $("source-text").value = translated;
  schedule();
}

async function start() {
  try {
    const [settings, languages] = await Promise.all([
      fetch("/frontend/settings").then((r) => (r.ok ? r.json() : Promise.reject(r))),
      fetch("/languages").then((r) => (r.ok ? r.json() : Promise.reject(r))),
    ]);
    state.charLimit = settings.charLimit;
    state.timeout = settings.frontendTimeout;
    state.keyRequired = settings.keyRequired;
    state.languages = languages;
    $("key-row").hidden = !settings.keyRequired;
    const source = $("source-lang");
    for (const l of languages) source.add(new Option(l.name, l.code));
    source.value = settings.language.source.code;
    fillTargets();
    const target = settings.language.target.code;
    if ([...$("target-lang").options].some((o) => o.value === target)) {
      $("target-lang").value = target;
    }
    updateCount();
  } catch (err) {
    const message = err instanceof Response ? await errorMessage(err) : "";
    showError(`The languages could not be loaded. ${message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("translator").addEventListener("submit", (e) => { e.preventDefault(); translate(); });
  $("source-text").addEventListener("input", schedule);
  $("source-lang").addEventListener("change", () => { fillTargets(); schedule(); });
  $("target-lang").addEventListener("change", schedule);
  $("swap").addEventListener("click", swap);
  $("copy").addEventListener("click", async () => {
    const text = $("target-text").value;
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      $("target-text").select();
      document.execCommand("copy");
    }
    $("status").textContent = "Copied";
  });
  start();
});
