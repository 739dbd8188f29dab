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
    process: "process", equipment_state: "equipment state", production: "production",
    energy: "energy", environment: "environment", material: "material", maintenance: "maintenance",
    not_found: "No such device.",
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
    process: "공정 변수", equipment_state: "설비 상태", production: "생산",
    energy: "에너지", environment: "환경", material: "자재", maintenance: "보전",
    not_found: "그런 설비가 없습니다.",
  },
};
const CATEGORIES = ["process", "quality", "equipment_state", "production", "energy", "environment",
  "material", "maintenance", "kpi"];
const POLL_MS = 2000;

let lang = localStorage.getItem("mos-lang") ||
  ((navigator.language || "en").toLowerCase().startsWith("ko") ? "ko" : "en");
let lastStatus = null;
let lastValues = null;
let lastOk = 0;

const $ = (sel) => document.querySelector(sel);
const t = (key) => (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key;
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
for (const id of ["#filter-text", "#filter-category", "#filter-quality"]) {
  $(id).addEventListener("input", () => render());
}

// ---------------------------------------------------------------- rendering

function applyLanguage() {
  document.documentElement.lang = lang;
  $("#lang").textContent = lang === "ko" ? "English" : "한국어";
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  const select = $("#filter-category");
  const chosen = select.value;
  select.innerHTML = `<option value="">${esc(t("all_categories"))}</option>` +
    CATEGORIES.map((c) => `<option value="${c}">${esc(t(c))}</option>`).join("");
  select.value = chosen;
}
$("#lang").addEventListener("click", () => {
  lang = lang === "ko" ? "en" : "ko";
  localStorage.setItem("mos-lang", lang);
  applyLanguage();
  render();
});

function tile(label, figure, sub = "") {
  return `<div class="tile"><div class="label">${esc(label)}</div><div class="figure">${esc(figure)}</div>` +
    (sub ? `<div class="sub">${esc(sub)}</div>` : "") + "</div>";
}

function stateCell(state) {
  return `<span class="state-${esc(state)}">${esc(t(state))}</span>`;
}

function sparkline(history) {
  const points = (history || []).filter((p) => p[1] !== null && Number.isFinite(p[1]));
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
  $("#agent-id").textContent = a.id || "";
  $("#agent-line").textContent = `${t("site")} ${a.site || ""} · ${t("version")} ${a.version || ""}`;
  const disk = b.disk || status.disk || {};
  const free = disk.free_bytes ?? b.disk_free_bytes;
  $("#tiles").innerHTML = [
    tile(t("uptime"), fmtAge(a.uptime_s)),
    tile(t("points_s"), fmtNumber((status.pipeline || {}).points_per_s, 0)),
    tile(t("buffer_points"), fmtNumber(b.points, 0), fmtBytes(b.bytes)),
    tile(t("oldest"), fmtAge(b.oldest_age_s)),
    tile(t("disk"), fmtBytes(free)),
  ].join("");
}

function kpiEntries(kpi) {
  // Shift-to-date figures per equipment; accepts a list or a mapping keyed by equipment.
  if (!kpi) return [];
  const list = Array.isArray(kpi) ? kpi : Object.entries(kpi).map(([equipment, v]) => ({ equipment, ...v }));
  return list.map((e) => ({ equipment: e.equipment || e.name, ...(e.current || e) }))
    .filter((e) => e && (e.oee !== undefined || e.availability !== undefined));
}

function renderKpis(status) {
  const entries = kpiEntries(status.kpi);
  const device = currentDevice();
  const shown = device ? entries.filter((e) => e.equipment === device) : entries;
  $("#kpi-section").hidden = shown.length === 0;
  $("#kpis").innerHTML = shown.map((e) => {
    const pct = (v) => (v === null || v === undefined ? t("none") : `${fmtNumber(v, 1)} %`);
    const sub = `${t("availability")} ${pct(e.availability)} · ${t("effectiveness")} ${pct(e.effectiveness)}` +
      ` · ${t("quality_rate")} ${pct(e.quality_rate)}`;
    return tile(`${e.equipment} · ${t("shift")} ${e.shift || ""}`, `${t("oee")} ${pct(e.oee)}`, sub);
  }).join("");
}

function renderSinks(status) {
  $("#sinks tbody").innerHTML = (status.sinks || []).map((s) => `<tr>
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
    <td>${c.last_release ? esc(new Date(c.last_release * 1000).toLocaleString(lang)) : t("none")}</td></tr>`).join("");
}

function valueRows(device, series, now) {
  const f = filters();
  const rows = series.filter((s) =>
    (!f.category || s.category === f.category) && (!f.quality || s.quality === f.quality) &&
    (!f.text || device.name.toLowerCase().includes(f.text) || String(s.tag).toLowerCase().includes(f.text)));
  if (rows.length === 0) return "";
  return `<table><thead><tr><th>${t("tag")}</th><th>${t("value")}</th><th>${t("quality")}</th>
    <th>${t("age")}</th><th>${t("category")}</th><th>${t("stage")}</th><th>${t("trend")}</th></tr></thead><tbody>` +
    rows.map((s) => {
      const shown = s.text !== undefined && s.text !== null ? esc(s.text)
        : `${fmtNumber(s.value, 3)}${s.unit ? ` <span class="muted">${esc(s.unit)}</span>` : ""}`;
      return `<tr data-tag="${esc(s.tag)}"><td>${esc(s.tag)}</td><td class="num value">${shown}</td>
        <td><span class="q q-${esc(s.quality)}" title="${t("code")} ${esc(s.quality_code)}">${esc(t(`q_${s.quality}`))}</span></td>
        <td class="num">${fmtAge(s.time ? now - s.time : null)}</td><td>${esc(t(s.category))}</td>
        <td>${esc(s.stage || "")}</td><td>${sparkline(s.history)}</td></tr>`;
    }).join("") + "</tbody></table>";
}

function renderDevices(status, values) {
  const only = currentDevice();
  const f = filters();
  const now = status.time || Date.now() / 1000;
  const byName = (values && values.devices) || {};
  let devices = status.devices || [];
  if (only) devices = devices.filter((d) => d.name === only);
  $("#devices-title").textContent = only ? only : t("devices");
  if (only && devices.length === 0) {
    $("#devices").innerHTML = `<p>${t("not_found")} <a href="/" data-nav>${t("back")}</a></p>`;
    return;
  }
  $("#devices").innerHTML = devices.map((d) => {
    const series = byName[d.name] || [];
    const table = valueRows(d, series, now);
    const matches = !f.text || d.name.toLowerCase().includes(f.text) || table;
    if (!matches || ((f.category || f.quality) && !table)) return "";
    return `<div class="device" data-device="${esc(d.name)}"><div class="head">
      <a href="/devices/${encodeURIComponent(d.name)}" data-nav>${esc(d.name)}</a>
      <span class="muted">${esc(d.asset || "")}</span> ${stateCell(d.state)}
      <span>${fmtNumber(d.points_per_s, 1)} ${t("points_s")}</span>
      <span class="muted">${fmtNumber(d.series, 0)} ${t("series")}</span>
      ${d.last_error ? `<span class="error">${esc(d.last_error)}</span>` : ""}
      ${only ? `<a href="/" data-nav>${t("back")}</a>` : ""}</div>
      ${table || `<p class="muted" style="padding:0 .8rem">${t("no_values")}</p>`}</div>`;
  }).join("");
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
    const device = currentDevice();
    const query = device ? `?device=${encodeURIComponent(device)}` : "";
    const [status, values] = await Promise.all([getJSON("/status"), getJSON(`/values${query}`)]);
    lastStatus = status; lastValues = values; lastOk = Date.now();
    $("#main").hidden = false;
    $("#signin").hidden = true;
    render();
  } catch (error) {
    if (String(error.message) === "unauthorised") return;  // waiting for the sign-in
  } finally {
    $("#live").classList.toggle("stale", Date.now() - lastOk > 3 * POLL_MS);
    $("#live").title = Date.now() - lastOk > 3 * POLL_MS ? t("unreachable") : t("live_hint");
    if (!$("#signin").hidden && !lastStatus) return;
    timer = setTimeout(refresh, POLL_MS);
  }
}

applyLanguage();
refresh();
