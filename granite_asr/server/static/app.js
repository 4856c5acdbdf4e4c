// granite-asr web page (issue 5 §4): upload or record audio, send it to the server's own OpenAI-style
// endpoint, show the transcript with word timings and speakers, download srt / vtt / json.
// The subtitles come from the server (verbose_json with include[]=srt,vtt), made by the same writers as
// the CLI's, so a download never needs a second decode and never differs from `granite-asr transcribe`.
"use strict";

const $ = (id) => document.getElementById(id);
const LANGUAGES = { en: "English", fr: "French", de: "German", es: "Spanish", pt: "Portuguese",
  ja: "Japanese", it: "Italian", zh: "Mandarin" };
const state = { model: null, info: null, audio: null, result: null, recorder: null };

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

function option(select, value, label) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  select.appendChild(o);
}

// ------------------------------------------------------------------------------------------ model info

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: authHeaders() });
    if (r.status === 401) {
      $("model").textContent = "API key needed";
      document.querySelector("details.key").open = true;
      return;
    }
    const body = await r.json();
    const m = body.data[0];
    state.model = m.id;
    state.info = m.granite_asr || { languages: [], translation: [], speakers: false, keywords: true };
    $("model").textContent = `${m.id} · ${state.info.variant || "model"}`;
    fillLanguages();
  } catch (e) {
    $("model").textContent = "server unreachable";
  }
  updateSubmit();
}

function fillLanguages() {
  const lang = $("language");
  lang.length = 1;
  for (const code of state.info.languages) option(lang, code, LANGUAGES[code] || code);
  const canTranslate = state.info.translation.length > 0;
  $("task").querySelector('option[value="translate"]').disabled = !canTranslate;
  $("speakers-wrap").hidden = !state.info.speakers;
  $("keywords").disabled = !state.info.keywords;
  fillTargets();
}

function fillTargets() {
  const source = $("language").value;
  const target = $("target");
  const previous = target.value;
  target.length = 0;
  const pairs = state.info.translation.map((p) => p.split("->"));
  const targets = [...new Set(pairs.filter(([s]) => !source || s === source).map(([, t]) => t))];
  for (const code of targets) option(target, code, LANGUAGES[code] || code);
  if (targets.includes(previous)) target.value = previous;
  else if (targets.includes("en")) target.value = "en";
  const translating = $("task").value === "translate";
  $("target-wrap").hidden = !translating;
  $("submit").textContent = translating ? "Translate" : "Transcribe";
}

function updateSubmit() {
  $("submit").disabled = !(state.audio && state.model) || Boolean(state.recorder);
}

// ------------------------------------------------------------------------------------------ audio in

function useAudio(file) {
  state.audio = file;
  $("file-name").textContent = `${file.name} · ${(file.size / 1024).toFixed(0)} KB`;
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(file);
  player.hidden = false;
  updateSubmit();
}

async function toggleRecording() {
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    setStatus(`Microphone unavailable: ${e.message}`, "error");
    return;
  }
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  const started = Date.now();
  const timer = setInterval(() => {
    $("rec-time").textContent = `${((Date.now() - started) / 1000).toFixed(0)} s`;
  }, 250);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = () => {
    clearInterval(timer);
    stream.getTracks().forEach((t) => t.stop());
    state.recorder = null;
    $("record").textContent = "● Record";
    $("record").classList.remove("recording");
    const type = recorder.mimeType || "audio/webm";
    const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    useAudio(new File(chunks, `recording.${ext}`, { type }));
  };
  state.recorder = recorder;
  recorder.start();
  $("record").textContent = "■ Stop";
  $("record").classList.add("recording");
  updateSubmit();
}

// ------------------------------------------------------------------------------------------ request

async function submit() {
  const translating = $("task").value === "translate";
  const form = new FormData();
  form.append("file", state.audio, state.audio.name);
  form.append("model", state.model);
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "segment");
  if (!translating) form.append("timestamp_granularities[]", "word");
  form.append("include[]", "srt");
  form.append("include[]", "vtt");
  if ($("language").value) form.append("language", $("language").value);
  if (translating) form.append("to_language", $("target").value);
  for (const k of $("keywords").value.split(",").map((s) => s.trim()).filter(Boolean)) {
    form.append("keywords[]", k);
  }
  if (!$("speakers-wrap").hidden && $("speakers").checked) form.append("speakers", "true");

  $("submit").disabled = true;
  setStatus(translating ? "Translating…" : "Transcribing…", "busy");
  const started = performance.now();
  try {
    const endpoint = translating ? "translations" : "transcriptions";
    const r = await fetch(`/v1/audio/${endpoint}`, { method: "POST", body: form, headers: authHeaders() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : `HTTP ${r.status}`);
    const seconds = (performance.now() - started) / 1000;
    setStatus(`Done in ${seconds.toFixed(1)} s`, "ok");
    showResult(body, seconds);
  } catch (e) {
    setStatus(e.message, "error");
  } finally {
    updateSubmit();
  }
}

// ------------------------------------------------------------------------------------------ result

function fmtTime(t) {
  const m = Math.floor(t / 60);
  const s = (t - 60 * m).toFixed(2).padStart(5, "0");
  return `${m}:${s}`;
}

function showResult(body, seconds) {
  state.result = body;
  $("result").hidden = false;
  const speed = body.duration > 0 && seconds > 0 ? ` · ${(body.duration / seconds).toFixed(1)}× real time` : "";
  const language = body.language && body.language !== "unknown" ? ` · ${body.language}` : "";
  $("summary").textContent = `${body.task}${language} · ${body.duration.toFixed(1)} s of audio${speed}`;
  const box = $("transcript");
  box.replaceChildren();
  const segments = body.segments || [];
  if (!segments.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = body.text || "No speech found.";
    box.appendChild(p);
    return;
  }
  const words = body.words || [];
  for (const seg of segments) box.appendChild(segmentRow(seg, words));
}

function segmentRow(seg, words) {
  const row = document.createElement("div");
  row.className = "seg";
  const time = document.createElement("button");
  time.type = "button";
  time.className = "time";
  time.textContent = `${fmtTime(seg.start)} → ${fmtTime(seg.end)}`;
  time.addEventListener("click", () => seek(seg.start));
  row.appendChild(time);
  if (seg.speaker) {
    const chip = document.createElement("span");
    chip.className = "speaker";
    chip.textContent = seg.speaker;
    row.appendChild(chip);
  }
  const text = document.createElement("p");
  text.className = "text";
  const mine = words.filter((w) => w.start >= seg.start - 1e-3 && w.end <= seg.end + 1e-3);
  if (mine.length) {
    for (const w of mine) {
      const span = document.createElement("span");
      span.className = "word";
      span.textContent = w.word;
      span.dataset.start = w.start;
      span.dataset.end = w.end;
      span.title = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s`;
      span.addEventListener("click", () => seek(w.start));
      text.append(span, " ");
    }
  } else {
    text.textContent = seg.text.trim();
  }
  row.appendChild(text);
  return row;
}

function seek(t) {
  const player = $("player");
  if (player.hidden) return;
  player.currentTime = t;
  player.play();
}

function highlight() {
  const t = $("player").currentTime;
  for (const w of document.querySelectorAll("#transcript .word")) {
    w.classList.toggle("now", t >= Number(w.dataset.start) && t < Number(w.dataset.end));
  }
}

function download(ext) {
  const body = state.result;
  if (!body) return;
  let text;
  if (ext === "json") {
    const { files, ...rest } = body; // the subtitle strings are ours, not part of OpenAI's verbose_json
    text = JSON.stringify(rest, null, 2);
  } else {
    text = (body.files || {})[ext] || "";
  }
  const type = { json: "application/json", srt: "application/x-subrip", vtt: "text/vtt" }[ext];
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  const stem = state.audio ? state.audio.name.replace(/\.[^.]*$/, "") : "transcript";
  a.download = `${stem}.${ext}`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ------------------------------------------------------------------------------------------ wiring

function wire() {
  $("file").addEventListener("change", (e) => e.target.files[0] && useAudio(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) useAudio(e.dataTransfer.files[0]);
  });
  const canRecord = Boolean(navigator.mediaDevices && window.MediaRecorder);
  $("record").hidden = !canRecord;
  $("record").addEventListener("click", toggleRecording);
  $("task").addEventListener("change", fillTargets);
  $("language").addEventListener("change", fillTargets);
  $("submit").addEventListener("click", submit);
  $("player").addEventListener("timeupdate", highlight);
  for (const ext of ["srt", "vtt", "json"]) $(`dl-${ext}`).addEventListener("click", () => download(ext));
  const key = $("api-key");
  key.value = localStorage.getItem("granite-asr-key") || "";
  key.addEventListener("change", () => {
    localStorage.setItem("granite-asr-key", key.value.trim());
    loadModel();
  });
}

wire();
loadModel();
