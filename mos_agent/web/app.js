// The operator's page: read-only, served from the agent's health port, no external assets.
// It polls /status (the same JSON `mos-agent status` renders) and /values (latest values with a
// short history per series) and redraws in place; nothing here can change the agent or a device.
"use strict";

const TEXT = {
  en: {
    live_hint: "updates every few seconds", signin_title: "Sign in",
    signin_hint: "This agent asks for its access token (agent.health_token_file on the gateway).",
    signin: "Sign in", signin_failed: "The token was not accepted.",
    kpi: "OEE this shift (ISO 22400)", sinks: "Sinks", sink: "sink", type: "type", state: "state",
    lag: "lag", sent: "sent", last_error: "last error", contracts: "Sharing contracts",
    contract: "contract", consumer: "consumer", status: "status", datasets: "datasets",
    released: "points released", last_release: "last release", devices: "Devices",
    search: "search device or tag", all_categories: "all categories", all_qualities: "all qualities",
    q_good: "good", q_uncertain: "uncertain", q_bad: "bad",
    readonly: "Read-only view. Nothing on this page changes the agent or a device.",
    site: "site", version: "version", uptime: "uptime", points_s: "points/s", buffer: "buffer",
    buffer_points: "points buffered", oldest: "oldest", disk: "disk headroom", tag: "tag",
    value: "value", quality: "quality", age: "age", category: "category", stage: "stage",
    trend: "trend", series: "series", more: "all values", none: "—", back: "all devices",
    code: "code", availability: "availability", effectiveness: "effectiveness",
    quality_rate: "quality rate", oee: "OEE", shift: "shift", no_values: "no values yet",
    unreachable: "agent not reachable", pending: "pending", active: "active", expired: "expired",
    running: "running", degraded: "degraded", down: "down", connecting: "connecting",
    starting: "starting", stopped: "stopped", idle: "idle", retrying: "retrying", failed: "failed",
    auth_failed: "auth failed", sending: "sending", stopping: "stopping",
    cat_process: "process", cat_quality: "quality", cat_equipment_state: "equipment state",
    cat_production: "production", cat_energy: "energy", cat_environment: "environment",
    cat_material: "material", cat_maintenance: "maintenance", cat_kpi: "KPI",
    not_found: "No such device.", shown_of: "{shown} of {matched} values", show_all: "show all",
    no_match: "no value matches", no_sinks: "no sink configured", kind: "kind", total_disk: "of {total}",
    stage_receiving: "receiving", stage_machining: "machining", stage_forming: "forming", stage_welding: "welding",
    stage_assembly: "assembly", stage_painting: "painting", stage_inspection: "inspection", stage_packing: "packing",
    stage_shipping: "shipping", stage_utility: "utility", language: "language",
  },
  ko: {
    live_hint: "몇 초마다 갱신", signin_title: "로그인",
    signin_hint: "이 에이전트는 접근 토큰을 요구합니다 (게이트웨이의 agent.health_token_file).",
    signin: "로그인", signin_failed: "토큰이 맞지 않습니다.",
    kpi: "이번 근무조 설비종합효율 (ISO 22400)", sinks: "싱크", sink: "싱크", type: "유형", state: "상태",
    lag: "지연", sent: "전송", last_error: "마지막 오류", contracts: "데이터 공유 계약",
    contract: "계약", consumer: "수요자", status: "상태", datasets: "데이터셋",
    released: "제공한 포인트", last_release: "마지막 제공", devices: "설비",
    search: "설비 또는 태그 검색", all_categories: "모든 분류", all_qualities: "모든 품질",
    q_good: "양호", q_uncertain: "불확실", q_bad: "불량",
    readonly: "읽기 전용 화면입니다. 이 페이지에서는 에이전트나 설비를 변경할 수 없습니다.",
    site: "사업장", version: "버전", uptime: "가동 시간", points_s: "포인트/초", buffer: "버퍼",
    buffer_points: "버퍼의 포인트", oldest: "가장 오래된 데이터", disk: "디스크 여유", tag: "태그",
    value: "값", quality: "품질", age: "경과", category: "분류", stage: "공정",
    trend: "추이", series: "시계열", more: "모든 값", none: "—", back: "전체 설비",
    code: "코드", availability: "가용률", effectiveness: "성능효율",
    quality_rate: "양품률", oee: "설비종합효율", shift: "근무조", no_values: "아직 값이 없습니다",
    unreachable: "에이전트에 연결할 수 없습니다", pending: "대기", active: "유효", expired: "만료",
    running: "가동", degraded: "일부 장애", down: "중단", connecting: "연결 중",
    starting: "시작 중", stopped: "정지", idle: "유휴", retrying: "재시도 중", failed: "실패",
    auth_failed: "인증 실패", sending: "전송 중", stopping: "종료 중",
    cat_process: "공정 변수", cat_quality: "품질", cat_equipment_state: "설비 상태",
    cat_production: "생산", cat_energy: "에너지", cat_environment: "환경",
    cat_material: "자재", cat_maintenance: "보전", cat_kpi: "핵심성과지표",
    not_found: "그런 설비가 없습니다.", shown_of: "값 {matched}개 중 {shown}개", show_all: "모두 보기",
    no_match: "조건에 맞는 값이 없습니다", no_sinks: "설정된 싱크가 없습니다", kind: "종류", total_disk: "전체 {total}",
    stage_receiving: "입고", stage_machining: "가공", stage_forming: "성형", stage_welding: "용접",
    stage_assembly: "조립", stage_painting: "도장", stage_inspection: "검사", stage_packing: "포장",
    stage_shipping: "출하", stage_utility: "유틸리티", language: "언어",
  },
};
const CATEGORIES = ["process", "quality", "equipment_state", "production", "energy", "environment",
  "material", "maintenance", "kpi"];
const POLL_MS = 2000;
const OVERVIEW_LIMIT = 10;  // values a device on the overview (the device page shows up to DEVICE_LIMIT)
const DEVICE_LIMIT = 500;
// UCUM codes as an operator writes them
const UNIT_SHOWN = { Cel: "°C", "[degF]": "°F", "kW.h": "kWh", "W.h": "Wh", "m3": "m³", "m3/h": "m³/h",
  "m2": "m²", "mm2": "mm²", "/min": "/min", "/h": "/h", "1/min": "/min", "[ppm]": "ppm" };

let lang = localStorage.getItem("mos-lang") ||
  ((navigator.language || "en").toLowerCase().startsWith("ko") ? "ko" : "en");
let lastStatus = null;
let lastValues = null;
let lastOk = 0;

const $ = (sel) => document.querySelector(sel);
const t = (key, args = {}, fallback = key) => ((TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || fallback)
  .replace(/\{(\w+)\}/g, (_, name) => args[name] ?? "");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g,
  (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

function fmtNumber(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(v)) return t("none");
  return Number(v).toLocaleString(lang === "ko" ? "ko-KR" : "en-US", { maximumFractionDigits: digits });
}
function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return t("none");
  const s = Math.max(0, seconds);
  if (s < 120) return `${Math.round(s)}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${(s / 3600).toFixed(1)}h`;
  return `${(s / 86400).toFixed(1)}d`;
}
function fmtTime(when) {
  // epoch seconds or an RFC 3339 text, in the page's language and the browser's time zone
  if (when === null || when === undefined || when === "") return t("none");
  const date = typeof when === "number" ? new Date(when * 1000) : new Date(when);
  return Number.isNaN(date.getTime()) ? esc(when) : esc(date.toLocaleString(lang === "ko" ? "ko-KR" : "en-GB"));
}
function fmtBytes(n) {
  if (n === null || n === undefined) return t("none");
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0; let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// ---------------------------------------------------------------- fetching with the token

function token() { return sessionStorage.getItem("mos-token"); }

async function getJSON(path) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) { showSignin(); throw new Error("unauthorised"); }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function showSignin(failed = false) {
  $("#main").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").hidden = !failed;
}

$("#signin-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem("mos-token", $("#token").value.trim());
  try {
    await getJSON("/status");
    $("#signin").hidden = true;
    refresh();
  } catch (_) {
    sessionStorage.removeItem("mos-token");
    showSignin(true);
  }
});

// ---------------------------------------------------------------- routing and filters

function currentDevice() {
  const m = location.pathname.match(/^\/devices\/([^/]+)\/?$/);
  return m ? decodeURIComponent(m[1]) : null;
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-nav]");
  if (!a || event.ctrlKey || event.metaKey) return;
  event.preventDefault();
  history.pushState(null, "", a.getAttribute("href"));
  refresh();
});
window.addEventListener("popstate", refresh);

function filters() {
  return {
    text: $("#filter-text").value.trim().toLowerCase(),
    category: $("#filter-category").value,
    quality: $("#filter-quality").value,
  };
}
// The agent filters (a device may have thousands of series; only the first matches are sent).
let filterTimer = null;
for (const id of ["#filter-text", "#filter-category", "#filter-quality"]) {
  $(id).addEventListener("input", () => { clearTimeout(filterTimer); filterTimer = setTimeout(refresh, 250); });
}

function valuesQuery() {
  const f = filters();
  const device = currentDevice();
  const params = new URLSearchParams({ limit: String(device ? DEVICE_LIMIT : OVERVIEW_LIMIT) });
  if (device) params.set("device", device);
  if (f.text) params.set("q", f.text);
  if (f.category) params.set("category", f.category);
  if (f.quality) params.set("quality", f.quality);
  return `/values?${params}`;
}

// ---------------------------------------------------------------- rendering

function applyLanguage() {
  document.documentElement.lang = lang;
  $("#lang").textContent = lang === "ko" ? "English" : "한국어";
  $("#lang").setAttribute("aria-label", t("language"));
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  const select = $("#filter-category");
  const chosen = select.value;
  select.innerHTML = `<option value="">${esc(t("all_categories"))}</option>` +
    CATEGORIES.map((c) => `<option value="${c}">${esc(t(`cat_${c}`))}</option>`).join("");
  select.value = chosen;
}
$("#lang").addEventListener("click", () => {
  lang = lang === "ko" ? "en" : "ko";
  localStorage.setItem("mos-lang", lang);
  applyLanguage();
  render();
});

function tile(label, figure, sub = "", cls = "") {
  return `<div class="tile ${cls}"><div class="label">${esc(label)}</div><div class="figure">${esc(figure)}</div>` +
    (sub ? `<div class="sub">${esc(sub)}</div>` : "") + "</div>";
}

function stateCell(state) {
  return `<span class="state state-${esc(state)}">${esc(t(state))}</span>`;
}

function sparkline(times, values) {
  const points = [];
  for (let i = 0; i < Math.min(times.length, (values || []).length); i++) {
    if (values[i] !== null && Number.isFinite(values[i])) points.push([times[i], values[i]]);
  }
  if (points.length < 2) return "";
  const t0 = points[0][0]; const t1 = points[points.length - 1][0];
  let lo = Math.min(...points.map((p) => p[1])); let hi = Math.max(...points.map((p) => p[1]));
  if (hi === lo) { hi += 1; lo -= 1; }
  const xy = points.map((p) => {
    const x = t1 > t0 ? ((p[0] - t0) / (t1 - t0)) * 118 + 1 : 1;
    const y = 23 - ((p[1] - lo) / (hi - lo)) * 22;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  }).join(" ");
  return `<svg class="spark" viewBox="0 0 120 24" aria-hidden="true"><polyline points="${xy}"/></svg>`;
}

function renderHeader(status) {
  const a = status.agent || {};
  const b = status.buffer || {};
  const p = status.pipeline || {};
  $("#agent-id").textContent = a.id || "";
  $("#agent-line").textContent = `${t("site")} ${a.site || ""} · ${t("version")} ${a.version || ""}`;
  const total = b.disk_total_bytes;
  const free = b.disk_free_bytes;
  const diskLow = b.disk_full || (total && free / total < 0.05);
  $("#tiles").innerHTML = [
    tile(t("uptime"), fmtAge(a.uptime_s)),
    tile(t("points_s"), fmtNumber(p.points_per_s, 0)),
    tile(t("buffer_points"), fmtNumber(b.points, 0), fmtBytes(b.bytes)),
    tile(t("oldest"), fmtAge(b.oldest_age_s)),
    tile(t("disk"), free ? fmtBytes(free) : t("none"), total ? t("total_disk", { total: fmtBytes(total) }) : "",
      diskLow ? "alarm" : ""),
  ].join("");
}

function kpiEntries(kpi) {
  // Shift-to-date figures per equipment: a list of {equipment, device, current: {shift, kpi: {oee, …}}}
  // (or a mapping keyed by equipment, or flat figures); equipment without a current shift is left out.
  if (!kpi) return [];
  const list = Array.isArray(kpi) ? kpi : Object.entries(kpi).map(([equipment, v]) => ({ equipment, ...v }));
  return list.map((e) => {
    const figures = e.current === undefined ? e : e.current;
    if (!figures) return null;
    const k = figures.kpi || figures;
    return { equipment: e.equipment || e.name, device: e.device || e.equipment, shift: figures.shift,
      oee: k.oee, availability: k.availability, effectiveness: k.effectiveness, quality_rate: k.quality_rate };
  }).filter((e) => e && (e.oee !== undefined || e.availability !== undefined));
}

function renderKpis(status) {
  const entries = kpiEntries(status.kpi);
  const device = currentDevice();
  const shown = device ? entries.filter((e) => e.device === device || e.equipment === device) : entries;
  $("#kpi-section").hidden = shown.length === 0;
  $("#kpis").innerHTML = shown.map((e) => {
    const pct = (v) => (v === null || v === undefined ? t("none") : `${fmtNumber(v, 1)} %`);
    const sub = `${t("availability")} ${pct(e.availability)} · ${t("effectiveness")} ${pct(e.effectiveness)}` +
      ` · ${t("quality_rate")} ${pct(e.quality_rate)}`;
    return tile(`${e.equipment} · ${t("shift")} ${e.shift || ""}`, `${t("oee")} ${pct(e.oee)}`, sub);
  }).join("");
}

function renderSinks(status) {
  const sinks = status.sinks || [];
  if (sinks.length === 0) {
    $("#sinks tbody").innerHTML = `<tr><td colspan="6" class="muted">${esc(t("no_sinks"))}</td></tr>`;
    return;
  }
  $("#sinks tbody").innerHTML = sinks.map((s) => `<tr>
    <td>${esc(s.name)}</td><td>${esc(s.type)}</td><td>${stateCell(s.state)}</td>
    <td class="num">${fmtNumber(s.lag_points, 0)} · ${fmtAge(s.lag_seconds)}</td>
    <td class="num">${fmtNumber(s.sent_points, 0)}</td><td class="error">${esc(s.last_error || "")}</td></tr>`).join("");
}

function renderContracts(status) {
  const contracts = status.contracts || [];
  $("#contracts-section").hidden = contracts.length === 0;
  $("#contracts tbody").innerHTML = contracts.map((c) => `<tr>
    <td>${esc(c.id)}</td><td>${esc(c.consumer || "")}</td><td>${esc(t(c.status))}</td>
    <td>${esc((c.datasets || []).join(", "))}</td><td class="num">${fmtNumber(c.points_released, 0)}</td>
    <td>${fmtTime(c.last_release)}</td></tr>`).join("");
}

function shownValue(s) {
  if (s.text !== undefined && s.text !== null) return esc(s.text);
  if (s.value === null || s.value === undefined) return t("none");
  const unit = s.unit ? ` <span class="unit">${esc(UNIT_SHOWN[s.unit] || s.unit)}</span>` : "";
  return `${fmtNumber(s.value, 3)}${unit}`;
}

function valueRows(answer, now) {
  const series = answer.series || [];
  if (series.length === 0) return "";
  const times = answer.history_time || [];
  return `<table class="values"><thead><tr><th>${t("tag")}</th><th>${t("value")}</th><th>${t("quality")}</th>
    <th>${t("age")}</th><th>${t("category")}</th><th>${t("stage")}</th><th>${t("trend")}</th></tr></thead><tbody>` +
    series.map((s) => {
      const quality = s.quality ? `<span class="q q-${esc(s.quality)}" title="${esc(t("code"))} ${esc(s.quality_code)}">` +
        `${esc(t(`q_${s.quality}`))}</span>` : t("none");
      return `<tr data-tag="${esc(s.tag)}"><td>${esc(s.tag)}</td><td class="num value">${shownValue(s)}</td>
        <td>${quality}</td><td class="num">${fmtAge(s.time ? now - s.time : null)}</td>
        <td>${esc(t(`cat_${s.category}`, {}, s.category))}</td><td>${esc(s.stage ? t(`stage_${s.stage}`, {}, s.stage) : "")}</td><td>${sparkline(times, s.history)}</td></tr>`;
    }).join("") + "</tbody></table>";
}

function renderDevices(status, values) {
  const only = currentDevice();
  const f = filters();
  const filtering = f.text || f.category || f.quality;
  const now = (values && values.time) || status.time || Date.now() / 1000;
  const byName = (values && values.devices) || {};
  let devices = status.devices || [];
  if (only) devices = devices.filter((d) => d.name === only);
  $("#devices-title").textContent = only ? only : t("devices");
  if (only && devices.length === 0) {
    $("#devices").innerHTML = `<p>${t("not_found")} <a href="/" data-nav>${t("back")}</a></p>`;
    return;
  }
  const blocks = devices.map((d) => {
    const answer = byName[d.name] || { series: [], total: 0, matched: 0 };
    if (filtering && answer.matched === 0) return "";
    const href = `/devices/${encodeURIComponent(d.name)}`;
    const more = answer.matched > (answer.series || []).length
      ? `<p class="more muted">${esc(t("shown_of", { shown: answer.series.length, matched: answer.matched }))}` +
        (only ? "" : ` · <a href="${href}" data-nav>${t("show_all")}</a>`) + "</p>" : "";
    return `<div class="device" data-device="${esc(d.name)}" data-state="${esc(d.state)}"><div class="head">
      <a href="${href}" data-nav>${esc(d.name)}</a>
      <span class="muted">${esc(d.asset || "")}</span> ${stateCell(d.state)}
      <span>${fmtNumber(d.points_per_s, 1)} ${t("points_s")}</span>
      <span class="muted">${fmtNumber(d.series, 0)} ${t("series")}</span>
      ${d.last_error ? `<span class="error">${esc(d.last_error)}</span>` : ""}
      ${only ? `<a href="/" data-nav>${t("back")}</a>` : ""}</div>
      ${valueRows(answer, now) || `<p class="muted empty">${t(filtering ? "no_match" : "no_values")}</p>`}${more}</div>`;
  }).join("");
  $("#devices").innerHTML = blocks || `<p class="muted">${t("no_match")}</p>`;
}

function render() {
  if (!lastStatus) return;
  renderHeader(lastStatus);
  renderKpis(lastStatus);
  renderSinks(lastStatus);
  renderContracts(lastStatus);
  renderDevices(lastStatus, lastValues);
}

// ---------------------------------------------------------------- polling

let timer = null;
async function refresh() {
  clearTimeout(timer);
  try {
    const [status, values] = await Promise.all([getJSON("/status"), getJSON(valuesQuery())]);
    lastStatus = status; lastValues = values; lastOk = Date.now();
    $("#main").hidden = false;
    $("#signin").hidden = true;
    render();
  } catch (error) {
    if (String(error.message) === "unauthorised") return;  // waiting for the sign-in
  } finally {
    const stale = Date.now() - lastOk > 3 * POLL_MS;
    $("#live").classList.toggle("stale", stale);
    $("#live").title = stale ? t("unreachable") : t("live_hint");
    if ($("#signin").hidden) timer = setTimeout(refresh, POLL_MS);
  }
}

applyLanguage();
refresh();
