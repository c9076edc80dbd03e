// Blindwatch officer console: plain ES2020, no framework, no build step.
//
// Rules this file keeps:
// - The bearer token lives in sessionStorage (gone with the tab) and travels only in the
//   Authorization header, never in a URL.
// - Server data reaches the page only as text nodes (el() below); no markup is ever parsed
//   from a string, so a value cannot become script.
// - It calls only the API routes that scope alerts to the caller (list, one alert, subject,
//   stream, the actions on one alert); the server decides, the page shows its answer.
"use strict";

const TOKEN_KEY = "blindwatch.console.token";
const LANG_KEY = "blindwatch.console.lang";
const TIERS = ["red", "orange", "yellow", "blue"];
const TIER_RANK = { red: 4, orange: 3, yellow: 2, blue: 1 };
const OUTCOMES = ["handled", "false_positive", "duplicate"];
const PAGE_SIZE = 500;
const FRESH_MS = 15000;

const I18N = {
  zh: {
    "app.title": "预警工作台",
    "signin.title": "民警登录",
    "signin.token": "API 令牌",
    "signin.hint": "令牌由管理员用 blindwatch users add 签发，只保存在本标签页中；关闭标签页或退出即清除。",
    "signin.submit": "登录",
    "signin.bad": "令牌无效或已被吊销。",
    "signin.expired": "登录已失效，请重新登录。",
    "signin.notOfficer": "本工作台供民警使用，该令牌不属于民警。",
    "signout": "退出",
    "live.on": "● 实时",
    "live.off": "○ 连接中断，正在重连…",
    "live.connecting": "○ 连接中…",
    "duty": "县级值班",
    "tier.red": "红色",
    "tier.orange": "橙色",
    "tier.yellow": "黄色",
    "tier.blue": "蓝色",
    "state.open": "待签收",
    "state.acknowledged": "已签收",
    "state.closed": "已关闭",
    "status.active": "未关闭",
    "filter.model": "模型",
    "filter.status": "状态",
    "filter.all": "全部",
    "col.tier": "等级",
    "col.model": "模型",
    "col.subject": "对象",
    "col.station": "派出所",
    "col.state": "状态",
    "col.time": "最近发现",
    "board.empty": "没有符合条件的预警。",
    "board.total": "共 {n} 条",
    "board.new": "新",
    "card.title": "对象卡片",
    "card.close": "返回",
    "card.loading": "加载中…",
    "card.kind": "对象类型",
    "card.highest": "最高等级（未关闭）",
    "card.stations": "派出所",
    "card.none": "无",
    "alert.id": "编号",
    "alert.category": "类别",
    "alert.station": "派出所",
    "alert.firstSeen": "首次发现",
    "alert.lastSeen": "最近发现",
    "alert.ackBy": "签收人",
    "alert.assignee": "指派给",
    "alert.outcome": "结果",
    "alert.closedBy": "关闭人",
    "alert.closedAt": "关闭时间",
    "alert.evidence": "证据特征",
    "alert.history": "处置记录",
    "alert.noEvidence": "无证据特征。",
    "act.acknowledge": "签收",
    "act.assign": "指派",
    "act.assignee": "民警用户名",
    "act.comment": "添加备注",
    "act.commentText": "备注内容",
    "act.close": "关闭预警",
    "act.outcome": "处置结果",
    "act.note": "说明（可选）",
    "act.reveal": "申请查看身份",
    "act.justification": "申请理由（必填，记入处置记录与审计）",
    "done.acknowledge": "已签收。",
    "done.assign": "已指派。",
    "done.comment": "备注已添加。",
    "done.close": "预警已关闭。",
    "done.reveal": "已获准查看身份（仅本次显示，已记入审计）：",
    "reveal.none": "公安自有数据中没有该对象的可查看记录。",
    "refused": "操作被拒绝",
    "failed": "出错了",
    "rule": "规则",
    "network": "无法连接服务器",
    "outcome.handled": "已处置",
    "outcome.false_positive": "误报",
    "outcome.duplicate": "重复预警",
    "outcome.resolved": "条件已解除（模型）",
    "change.opened": "生成",
    "change.reopened": "重新生成",
    "change.raised": "升级",
    "change.lowered": "降级",
    "change.resolved": "自动解除",
    "change.suppression_lifted": "不再抑制",
    "change.acknowledged": "签收",
    "change.assigned": "指派",
    "change.commented": "备注",
    "change.closed": "关闭",
    "model.run": "模型运行",
    "category.dispute": "矛盾纠纷",
    "category.mental-health": "精神卫生",
    "category.fugitive": "追逃",
    "category.public-order": "治安",
    "category.fraud": "诈骗",
    "category.other": "其他",
    "kind.person": "人员",
    "kind.phone": "电话号码",
    "kind.address": "地址",
    "kind.plate": "车牌",
  },
  en: {
    "app.title": "Officer console",
    "signin.title": "Officer sign-in",
    "signin.token": "API token",
    "signin.hint": "Tokens are issued with blindwatch users add. It is kept in this tab only and cleared when you close the tab or sign out.",
    "signin.submit": "Sign in",
    "signin.bad": "The token is unknown or revoked.",
    "signin.expired": "Your session ended; please sign in again.",
    "signin.notOfficer": "This console is for officers; this token is not an officer's.",
    "signout": "Sign out",
    "live.on": "● Live",
    "live.off": "○ Disconnected, reconnecting…",
    "live.connecting": "○ Connecting…",
    "duty": "county duty",
    "tier.red": "Red",
    "tier.orange": "Orange",
    "tier.yellow": "Yellow",
    "tier.blue": "Blue",
    "state.open": "Open",
    "state.acknowledged": "Acknowledged",
    "state.closed": "Closed",
    "status.active": "Not closed",
    "filter.model": "Model",
    "filter.status": "Status",
    "filter.all": "All",
    "col.tier": "Tier",
    "col.model": "Model",
    "col.subject": "Subject",
    "col.station": "Station",
    "col.state": "Status",
    "col.time": "Last seen",
    "board.empty": "No alerts match.",
    "board.total": "{n} alerts",
    "board.new": "new",
    "card.title": "Subject card",
    "card.close": "Back",
    "card.loading": "Loading…",
    "card.kind": "Subject kind",
    "card.highest": "Highest open tier",
    "card.stations": "Stations",
    "card.none": "none",
    "alert.id": "Alert",
    "alert.category": "Category",
    "alert.station": "Station",
    "alert.firstSeen": "First seen",
    "alert.lastSeen": "Last seen",
    "alert.ackBy": "Acknowledged by",
    "alert.assignee": "Assigned to",
    "alert.outcome": "Outcome",
    "alert.closedBy": "Closed by",
    "alert.closedAt": "Closed at",
    "alert.evidence": "Evidence",
    "alert.history": "History",
    "alert.noEvidence": "No evidence features.",
    "act.acknowledge": "Acknowledge",
    "act.assign": "Assign",
    "act.assignee": "Officer's user name",
    "act.comment": "Add comment",
    "act.commentText": "Comment",
    "act.close": "Close alert",
    "act.outcome": "Outcome",
    "act.note": "Note (optional)",
    "act.reveal": "Request reveal",
    "act.justification": "Justification (required; kept in the history and audited)",
    "done.acknowledge": "Acknowledged.",
    "done.assign": "Assigned.",
    "done.comment": "Comment added.",
    "done.close": "Alert closed.",
    "done.reveal": "Reveal granted (shown this once, audited):",
    "reveal.none": "The police's own data holds no revealable record of this subject.",
    "refused": "Refused",
    "failed": "Failed",
    "rule": "rule",
    "network": "Cannot reach the server",
    "outcome.handled": "Handled",
    "outcome.false_positive": "False positive",
    "outcome.duplicate": "Duplicate",
    "outcome.resolved": "Resolved (model)",
    "change.opened": "Opened",
    "change.reopened": "Reopened",
    "change.raised": "Raised",
    "change.lowered": "Lowered",
    "change.resolved": "Resolved",
    "change.suppression_lifted": "Suppression lifted",
    "change.acknowledged": "Acknowledged",
    "change.assigned": "Assigned",
    "change.commented": "Comment",
    "change.closed": "Closed",
    "model.run": "model run",
    "category.dispute": "Dispute",
    "category.mental-health": "Mental health",
    "category.fugitive": "Fugitive",
    "category.public-order": "Public order",
    "category.fraud": "Fraud",
    "category.other": "Other",
    "kind.person": "person",
    "kind.phone": "phone number",
    "kind.address": "address",
    "kind.plate": "licence plate",
  },
};

const state = {
  lang: "zh",
  token: null,
  me: null,
  alerts: new Map(), // id → alert, only those matching the filters
  filter: { model: "", status: "open,acknowledged" },
  sort: { key: "tier", dir: -1 },
  models: new Set(),
  loaded: false,
  loading: false,
  loadGen: 0,
  buffered: [], // live events that arrived while a list load was in flight
  stream: null, // AbortController of the live stream
  lastEventId: null,
  fresh: new Map(), // id → time it arrived live
  card: null, // pseudonym of the open subject card
  cardData: null,
  cardError: null,
  notices: new Map(), // alert id → { ok, text } | { error }
  reveals: new Map(), // alert id → revealed fields (memory only; gone on sign-out)
  renderTimer: 0,
  cardTimer: 0,
  freshTimer: 0,
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------
// Text and elements

function t(key, vars) {
  let s = I18N[state.lang][key] ?? I18N.zh[key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, String(v));
  return s;
}

// Builds an element; strings among the children become text nodes (never markup).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function formatTime(s) {
  const d = new Date(s);
  if (!s || Number.isNaN(d.getTime())) return s || "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

function formatValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(2);
  return String(v);
}

function modelTitle(id) {
  const m = (state.me?.models || []).find((x) => x.id === id);
  if (!m) return id;
  return state.lang === "zh" ? m.title_zh : m.title_en;
}

function tierBadge(tier) {
  return el("span", { class: `badge tier-${tier}`, "data-tier": tier }, t(`tier.${tier}`));
}

// A translated label for a known code, else the code itself (a newer server may add codes).
function label(group, code) {
  return I18N.zh[`${group}.${code}`] ? t(`${group}.${code}`) : code;
}

function outcomeLabel(o) {
  return label("outcome", o);
}

// An API failure as the user sees it: status, the problem's title and detail, and the rule.
function problemNode(err) {
  const p = err.problem || {};
  const refused = err.status === 403 || err.status === 409 || err.status === 422;
  return el(
    "div",
    { class: "problem", "data-status": err.status },
    el("strong", {}, `${refused ? t("refused") : t("failed")}${err.status ? ` (${err.status})` : ""}: ${p.title || ""}`),
    p.detail ? el("span", { class: "detail" }, p.detail) : null,
    p.rule ? el("span", { class: "rule" }, `${t("rule")}: `, el("code", {}, p.rule)) : null,
  );
}

function showNotice(box, content) {
  box.replaceChildren(...(content ? [content] : []));
  box.hidden = !content;
}

// ---------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { title: t("network"), detail: String(e.message || e) });
  }
  const type = res.headers.get("content-type") || "";
  if (res.ok) return type.includes("json") ? res.json() : res.text();
  let problem = null;
  if (type.includes("json")) {
    problem = await res.json().catch(() => null);
  } else {
    // Not a problem document (say, a body the JSON extractor refused): show it as text.
    const text = await res.text().catch(() => "");
    problem = { title: res.statusText, detail: text.slice(0, 300) };
  }
  const err = new ApiError(res.status, problem || { title: res.statusText });
  if (res.status === 401 && state.token) signOut(t("signin.expired"));
  throw err;
}

// ---------------------------------------------------------------------------------------
// Signing in and out

async function signIn(token) {
  state.token = token;
  let me;
  try {
    me = await api("GET", "/v1/me");
  } catch (e) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(e.status === 401 ? t("signin.bad") : e);
    return;
  }
  if (me.role !== "officer") {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(t("signin.notOfficer"));
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.me = me;
  state.models = new Set(me.models.map((m) => m.id));
  showBoard();
  startStream();
}

function signOut(message) {
  if (state.stream) state.stream.abort();
  sessionStorage.removeItem(TOKEN_KEY);
  Object.assign(state, {
    token: null,
    me: null,
    alerts: new Map(),
    models: new Set(),
    loaded: false,
    loading: false,
    buffered: [],
    stream: null,
    lastEventId: null,
    fresh: new Map(),
    card: null,
    cardData: null,
    cardError: null,
    notices: new Map(),
    reveals: new Map(),
  });
  state.loadGen += 1;
  $("rows").replaceChildren();
  $("card-body").replaceChildren();
  showSignIn(message);
}

function showSignIn(message) {
  $("board").hidden = true;
  $("card").hidden = true;
  $("main").classList.remove("with-card");
  $("signout").hidden = true;
  $("who").hidden = true;
  $("live").hidden = true;
  $("signin").hidden = false;
  $("token").value = "";
  const box = $("signin-error");
  if (!message) showNotice(box, null);
  else showNotice(box, message instanceof ApiError ? problemNode(message) : el("span", {}, message));
  $("token").focus();
}

function showBoard() {
  $("signin").hidden = true;
  $("board").hidden = false;
  $("signout").hidden = false;
  $("live").hidden = false;
  renderWho();
  renderModelOptions();
  render();
}

function renderWho() {
  const me = state.me;
  if (!me) return;
  const who = $("who");
  who.replaceChildren(
    el("span", { class: "name" }, me.name),
    " · ",
    el("span", { class: "station" }, me.station || ""),
  );
  if (me.duty) who.append(el("span", { class: "duty" }, t("duty")));
  who.hidden = false;
}

// ---------------------------------------------------------------------------------------
// The alert list and the live stream

function matchesFilter(a) {
  const statuses = state.filter.status ? state.filter.status.split(",") : null;
  if (statuses && !statuses.includes(a.state)) return false;
  if (state.filter.model && a.model !== state.filter.model) return false;
  return true;
}

function upsert(a, live) {
  if (!state.models.has(a.model)) {
    state.models.add(a.model);
    renderModelOptions();
  }
  if (matchesFilter(a)) {
    state.alerts.set(a.id, a);
    if (live) state.fresh.set(a.id, Date.now());
  } else {
    state.alerts.delete(a.id);
  }
}

async function loadAlerts() {
  const gen = ++state.loadGen;
  state.loading = true;
  state.buffered = [];
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.filter.status) params.set("status", state.filter.status);
  if (state.filter.model) params.set("model", state.filter.model);
  const all = [];
  try {
    let after = null;
    do {
      if (after) params.set("after", after);
      const page = await api("GET", `/v1/alerts?${params}`);
      all.push(...page.alerts);
      after = page.next || null;
    } while (after && gen === state.loadGen);
  } catch (e) {
    if (gen === state.loadGen) {
      state.loading = false;
      showNotice($("board-error"), problemNode(e));
    }
    return;
  }
  if (gen !== state.loadGen) return; // a newer load (a filter change) replaced this one
  state.alerts = new Map();
  for (const a of all) upsert(a, false);
  // Changes that streamed in during the load are at least as new as the list: apply last.
  for (const e of state.buffered) upsert(e.alert, true);
  state.buffered = [];
  state.loading = false;
  state.loaded = true;
  showNotice($("board-error"), null);
  render();
}

function setLive(mode) {
  const live = $("live");
  live.dataset.live = mode;
  live.textContent = t(`live.${mode}`);
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

// EventSource cannot send an Authorization header, so the stream is read with fetch and
// parsed here. After an error it reconnects with Last-Event-ID and the server replays what
// was missed.
function startStream() {
  const ctrl = new AbortController();
  state.stream = ctrl;
  streamLoop(ctrl);
}

async function streamLoop(ctrl) {
  let delay = 1000;
  setLive("connecting");
  while (!ctrl.signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const res = await fetch("/v1/alerts/stream", {
        headers,
        signal: ctrl.signal,
        cache: "no-store",
        credentials: "omit",
      });
      if (res.status === 401) {
        signOut(t("signin.expired"));
        return;
      }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      setLive("on");
      delay = 1000;
      // Load the list only once subscribed, so no change falls between the two; a resumed
      // stream replays what it missed instead.
      if (!state.lastEventId || !state.loaded) loadAlerts();
      await readEvents(res.body);
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    setLive("off");
    if (!state.loaded && !state.loading) loadAlerts(); // the board, even without the stream
    await sleep(delay, ctrl.signal);
    delay = Math.min(delay * 2, 30000);
  }
}

async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let data = [];
  let type = "message";
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      if (line === "") {
        if (id !== null) state.lastEventId = id;
        if (data.length) onEvent(type, data.join("\n"));
        data = [];
        type = "message";
        continue;
      }
      if (line.startsWith(":")) continue; // keep-alive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let v = colon < 0 ? "" : line.slice(colon + 1);
      if (v.startsWith(" ")) v = v.slice(1);
      if (field === "data") data.push(v);
      else if (field === "event") type = v;
      else if (field === "id" && !v.includes("\0")) id = v;
    }
  }
}

function onEvent(type, data) {
  if (type !== "alert") return;
  let e;
  try {
    e = JSON.parse(data);
  } catch {
    return;
  }
  if (!e || !e.alert) return;
  if (state.loading) state.buffered.push(e);
  upsert(e.alert, e.change !== undefined && !isOfficerAction(e.change));
  scheduleRender();
  if (state.card && e.alert.subject === state.card) scheduleCardRefresh();
}

function isOfficerAction(change) {
  return ["acknowledged", "assigned", "commented", "closed"].includes(change);
}

// ---------------------------------------------------------------------------------------
// The board

function scheduleRender() {
  // A model run streams many events at once: draw once per burst.
  if (state.renderTimer) return;
  state.renderTimer = setTimeout(() => {
    state.renderTimer = 0;
    render();
  }, 50);
}

function timeOf(a) {
  const ms = Date.parse(a.last_seen);
  return Number.isNaN(ms) ? 0 : ms;
}

function compareAlerts(a, b) {
  const { key, dir } = state.sort;
  const byTier = TIER_RANK[a.tier] - TIER_RANK[b.tier];
  const byTime = timeOf(a) - timeOf(b);
  const primary = key === "tier" ? byTier : byTime;
  const secondary = key === "tier" ? byTime : byTier;
  return dir * (primary || secondary) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function render() {
  if (!state.me) return;
  const list = [...state.alerts.values()].sort(compareAlerts);
  const counts = { red: 0, orange: 0, yellow: 0, blue: 0 };
  for (const a of list) counts[a.tier] = (counts[a.tier] || 0) + 1;
  for (const tier of TIERS) {
    document.querySelector(`[data-tier-count="${tier}"]`).textContent = String(counts[tier]);
  }
  // Rows that arrived live stay marked for a while; redraw when the marks run out.
  const now = Date.now();
  for (const [id, at] of state.fresh) if (now - at > FRESH_MS) state.fresh.delete(id);
  if (state.fresh.size && !state.freshTimer) {
    state.freshTimer = setTimeout(() => {
      state.freshTimer = 0;
      render();
    }, FRESH_MS);
  }
  $("rows").replaceChildren(...list.map(row));
  $("total").textContent = t("board.total", { n: list.length });
  $("empty").hidden = !state.loaded || list.length > 0;
  for (const th of document.querySelectorAll("th[data-col]")) {
    const on = th.dataset.col === state.sort.key;
    th.setAttribute("aria-sort", on ? (state.sort.dir < 0 ? "descending" : "ascending") : "none");
  }
}

function row(a) {
  const open = () => openCard(a.subject);
  return el(
    "tr",
    {
      class: `tier-${a.tier}${state.fresh.has(a.id) ? " fresh" : ""}${state.card === a.subject ? " selected" : ""}`,
      "data-alert": a.id,
      "data-tier": a.tier,
      "data-state": a.state,
      tabindex: 0,
      onclick: open,
      onkeydown: (ev) => {
        if (ev.key === "Enter") open();
      },
    },
    el("td", { class: "c-tier" }, tierBadge(a.tier)),
    el("td", { class: "c-model" }, modelTitle(a.model)),
    el("td", { class: "c-subject" }, el("span", { class: "pseudonym" }, a.subject)),
    el("td", { class: "c-station" }, a.station),
    el(
      "td",
      { class: "c-state" },
      el("span", { class: `state state-${a.state}` }, t(`state.${a.state}`)),
      state.fresh.has(a.id) ? el("span", { class: "new" }, t("board.new")) : null,
    ),
    el("td", { class: "c-time" }, el("time", { datetime: a.last_seen }, formatTime(a.last_seen))),
  );
}

function renderModelOptions() {
  const select = $("f-model");
  const ids = [...state.models].sort();
  select.replaceChildren(
    el("option", { value: "" }, t("filter.all")),
    ...ids.map((id) => el("option", { value: id }, modelTitle(id))),
  );
  select.value = state.filter.model;
}

// ---------------------------------------------------------------------------------------
// The subject card and the actions

async function openCard(pseudonym) {
  if (state.card !== pseudonym) {
    state.card = pseudonym;
    state.cardData = null;
    state.cardError = null;
    state.notices = new Map();
    state.reveals = new Map(); // a revealed identity is shown on its own card only
  }
  $("card").hidden = false;
  $("main").classList.add("with-card");
  renderCard();
  render();
  await refreshCard();
}

function closeCard() {
  state.card = null;
  state.cardData = null;
  state.cardError = null;
  state.notices = new Map();
  state.reveals = new Map();
  $("card").hidden = true;
  $("main").classList.remove("with-card");
  $("card-body").replaceChildren();
  render();
}

function scheduleCardRefresh() {
  if (state.cardTimer) return;
  state.cardTimer = setTimeout(() => {
    state.cardTimer = 0;
    refreshCard();
  }, 200);
}

async function refreshCard() {
  const p = state.card;
  if (!p) return;
  try {
    const card = await api("GET", `/v1/subjects/${encodeURIComponent(p)}`);
    if (state.card !== p) return;
    state.cardData = card;
    state.cardError = null;
    for (const a of card.alerts) upsert(a, false);
    scheduleRender();
  } catch (e) {
    if (state.card !== p) return;
    state.cardError = e;
  }
  renderCard();
}

function renderCard() {
  const body = $("card-body");
  // Keep what the officer is typing, and where, across a live refresh.
  const kept = new Map();
  for (const input of body.querySelectorAll("[data-keep]")) kept.set(input.dataset.keep, input.value);
  const active = body.contains(document.activeElement) ? document.activeElement : null;
  const focus = active?.dataset.keep
    ? { keep: active.dataset.keep, start: active.selectionStart, end: active.selectionEnd }
    : null;
  const card = state.cardData;
  const parts = [];
  if (state.cardError) parts.push(el("div", { class: "notice", role: "alert" }, problemNode(state.cardError)));
  if (!card) {
    if (!state.cardError) parts.push(el("p", { class: "muted" }, t("card.loading")));
    body.replaceChildren(...parts);
    return;
  }
  parts.push(
    el(
      "div",
      { class: "subject", "data-subject": card.pseudonym },
      el("h3", { class: "pseudonym" }, card.pseudonym),
      el(
        "dl",
        { class: "meta" },
        el("dt", {}, t("card.kind")),
        el("dd", {}, label("kind", card.subject_kind)),
        el("dt", {}, t("card.highest")),
        el("dd", {}, card.highest_tier ? tierBadge(card.highest_tier) : t("card.none")),
        el("dt", {}, t("card.stations")),
        el("dd", {}, card.stations.join(", ")),
      ),
    ),
  );
  for (const a of card.alerts) parts.push(alertSection(a, card.history[a.id] || []));
  body.replaceChildren(...parts);
  for (const input of body.querySelectorAll("[data-keep]")) {
    if (kept.has(input.dataset.keep)) input.value = kept.get(input.dataset.keep);
    if (focus && input.dataset.keep === focus.keep) {
      input.focus({ preventScroll: true });
      if (typeof focus.start === "number" && input.setSelectionRange) input.setSelectionRange(focus.start, focus.end);
    }
  }
}

function metaRows(a) {
  const rows = [
    ["alert.id", el("code", {}, a.id)],
    ["alert.category", label("category", a.category)],
    ["alert.station", a.station],
    ["alert.firstSeen", formatTime(a.first_seen)],
    ["alert.lastSeen", formatTime(a.last_seen)],
    ["alert.ackBy", a.acknowledged_by],
    ["alert.assignee", a.assignee],
    ["alert.outcome", a.outcome && outcomeLabel(a.outcome)],
    ["alert.closedBy", a.closed_by],
    ["alert.closedAt", a.closed_at && formatTime(a.closed_at)],
  ];
  return rows.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, t(k)), el("dd", {}, v)]);
}

function evidenceTable(evidence) {
  const names = Object.keys(evidence || {}).sort();
  if (!names.length) return el("p", { class: "muted" }, t("alert.noEvidence"));
  return el(
    "table",
    { class: "evidence" },
    el(
      "tbody",
      {},
      names.map((n) =>
        el("tr", {}, el("th", { scope: "row" }, n), el("td", { "data-feature": n }, formatValue(evidence[n]))),
      ),
    ),
  );
}

function historyList(entries) {
  return el(
    "ol",
    { class: "history" },
    entries
      .slice()
      .reverse()
      .map((h) =>
        el(
          "li",
          { "data-change": h.change },
          el("time", { datetime: h.at }, formatTime(h.at)),
          " ",
          el("strong", {}, label("change", h.change)),
          h.from && h.to && h.from !== h.to ? [" ", tierBadge(h.from), " → ", tierBadge(h.to)] : null,
          !h.from && h.to && !isOfficerAction(h.change) ? [" ", tierBadge(h.to)] : null,
          " · ",
          el("span", { class: "actor" }, h.actor || t("model.run")),
          h.detail ? el("div", { class: "detail" }, h.detail) : null,
        ),
      ),
  );
}

function alertSection(a, history) {
  const notice = state.notices.get(a.id);
  const revealed = state.reveals.get(a.id);
  const keep = (name) => `${a.id}:${name}`;
  const actions = [];
  if (a.state === "open") {
    actions.push(
      el(
        "button",
        { type: "button", class: "primary", "data-act": "acknowledge", onclick: (ev) => act(a, "acknowledge", {}, ev.currentTarget) },
        t("act.acknowledge"),
      ),
    );
  }
  if (a.state !== "closed") {
    actions.push(
      actionForm(a, "assign", [
        el("input", { name: "assignee", "data-keep": keep("assignee"), placeholder: t("act.assignee"), "aria-label": t("act.assignee"), autocomplete: "off" }),
      ], (f) => ({ assignee: f.assignee.value.trim() })),
      actionForm(a, "comment", [
        el("textarea", { name: "text", rows: 2, "data-keep": keep("text"), placeholder: t("act.commentText"), "aria-label": t("act.commentText") }),
      ], (f) => ({ text: f.text.value })),
      actionForm(a, "close", [
        el(
          "select",
          { name: "outcome", "data-keep": keep("outcome"), "aria-label": t("act.outcome") },
          OUTCOMES.map((o) => el("option", { value: o }, outcomeLabel(o))),
        ),
        el("input", { name: "note", "data-keep": keep("note"), placeholder: t("act.note"), "aria-label": t("act.note"), autocomplete: "off" }),
      ], (f) => {
        const note = f.note.value.trim();
        return note ? { outcome: f.outcome.value, note } : { outcome: f.outcome.value };
      }),
    );
  }
  // Reveal is offered on every alert: the access policies (own station, orange or red,
  // with a justification) decide, and a refusal is shown as the server gives it.
  actions.push(
    actionForm(a, "reveal", [
      el("input", { name: "justification", "data-keep": keep("justification"), placeholder: t("act.justification"), "aria-label": t("act.justification"), autocomplete: "off" }),
    ], (f) => ({ justification: f.justification.value })),
  );

  let noticeNode = null;
  if (notice?.error) noticeNode = problemNode(notice.error);
  else if (notice?.ok) noticeNode = el("div", { class: "ok" }, notice.text);
  return el(
    "section",
    { class: `alert tier-${a.tier}`, "data-alert-section": a.id, "data-state": a.state, "data-tier": a.tier },
    el(
      "header",
      {},
      tierBadge(a.tier),
      el("strong", { class: "model" }, modelTitle(a.model)),
      el("span", { class: `state state-${a.state}` }, t(`state.${a.state}`)),
    ),
    el("dl", { class: "meta" }, metaRows(a)),
    el("h4", {}, t("alert.evidence")),
    evidenceTable(a.evidence),
    el("div", { class: "notice", role: "alert", "data-notice": a.id, hidden: !noticeNode }, noticeNode),
    revealed ? revealNode(revealed) : null,
    el("div", { class: "actions" }, actions),
    el("h4", {}, t("alert.history")),
    historyList(history),
  );
}

function revealNode(fields) {
  return el(
    "div",
    { class: "revealed" },
    el("p", {}, t("done.reveal")),
    fields.length
      ? el(
          "table",
          { class: "evidence" },
          el("tbody", {}, fields.map((f) => el("tr", {}, el("th", { scope: "row" }, `${f.table}.${f.column}`), el("td", {}, f.value)))),
        )
      : el("p", { class: "muted" }, t("reveal.none")),
  );
}

function actionForm(a, kind, inputs, bodyOf) {
  const button = el("button", { type: "submit" }, t(`act.${kind}`));
  return el(
    "form",
    {
      class: `act act-${kind}`,
      "data-act": kind,
      onsubmit: (ev) => {
        ev.preventDefault();
        act(a, kind, bodyOf(ev.currentTarget.elements), button);
      },
    },
    inputs,
    button,
  );
}

async function act(a, kind, body, button) {
  button.disabled = true;
  try {
    const res = await api("POST", `/v1/alerts/${encodeURIComponent(a.id)}/${kind}`, body);
    if (kind === "reveal") state.reveals.set(a.id, res.fields || []);
    else upsert(res, false);
    state.notices.set(a.id, { ok: true, text: t(`done.${kind}`) });
    // The form is done with: clear what was typed into it.
    for (const input of $("card-body").querySelectorAll(`form[data-act="${kind}"] [data-keep]`)) {
      if (input.dataset.keep.startsWith(`${a.id}:`) && input.tagName !== "SELECT") input.value = "";
    }
    render();
    renderCard();
    await refreshCard();
  } catch (e) {
    if (!state.token) return; // signed out (401)
    state.notices.set(a.id, { error: e });
    renderCard();
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------
// Language

function applyLang() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.title = `${t("app.title")} · Blindwatch`;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  const toggle = $("lang");
  toggle.textContent = state.lang === "zh" ? "EN" : "中文";
  toggle.lang = state.lang === "zh" ? "en" : "zh-CN";
  toggle.setAttribute("aria-label", state.lang === "zh" ? "Switch to English" : "切换到中文");
  if ($("live").dataset.live) setLive($("live").dataset.live);
  if (state.me) {
    renderWho();
    renderModelOptions();
    render();
    if (state.card) renderCard();
  }
}

// ---------------------------------------------------------------------------------------
// Start

function init() {
  state.lang = localStorage.getItem(LANG_KEY) === "en" ? "en" : "zh";
  $("lang").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem(LANG_KEY, state.lang); // a preference, not a secret
    applyLang();
  });
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (token) signIn(token);
  });
  $("signout").addEventListener("click", () => signOut());
  $("card-close").addEventListener("click", closeCard);
  $("f-status").addEventListener("change", (ev) => {
    state.filter.status = ev.target.value;
    loadAlerts();
  });
  $("f-model").addEventListener("change", (ev) => {
    state.filter.model = ev.target.value;
    loadAlerts();
  });
  for (const b of document.querySelectorAll("button.sort")) {
    b.addEventListener("click", () => {
      const key = b.dataset.sort;
      state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: -1 };
      render();
    });
  }
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && state.card) closeCard();
  });
  applyLang();
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else showSignIn();
}

init();
