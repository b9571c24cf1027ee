/* tickcast dashboard: plain ES2020, no build step, no network beyond this origin's /v1 API.
 *
 * Data flow: GET /v1/predictions/latest seeds the table, WS /v1/stream keeps it live; the
 * chart draws one series from /v1/candles plus model overlays from /v1/predictions (history)
 * and the stream; the scoreboard (/v1/scoreboard) and pipeline health (/v1/status) poll.
 * Every DOM write is batched into one requestAnimationFrame; the table renders only its page.
 */
(function () {
  'use strict';

  const LWC = window.LightweightCharts;
  const PAGE_SIZE = 50;
  const KEY_STORE = 'tickcast.apiKey';
  const CANDLE_LIMIT = 300;
  const HISTORY_TIMEOUT_MS = 5000;
  const HISTORY_PAGE = 5000;
  const HISTORY_MAX_PAGES = 3;
  const TABLE_MIN_INTERVAL_MS = 250;
  const STATUS_EVERY_MS = 5000;
  const SCOREBOARD_EVERY_MS = 10000;
  const MODELS_EVERY_MS = 60000;
  const WS_BACKOFF_MIN_MS = 1000;
  const WS_BACKOFF_MAX_MS = 30000;
  const OFFLINE_SOURCES = new Set(['synthetic', 'replay', 'parquet', 'csv', 'file']);

  const $ = (sel) => document.querySelector(sel);

  // ---------------------------------------------------------------- small helpers

  const TF_UNIT_MS = { s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5, M: 2592e6 };
  function tfMs(tf) {
    const m = /^(\d+)([smhdwM])$/.exec(tf || '');
    return m ? Number(m[1]) * TF_UNIT_MS[m[2]] : 0;
  }

  function esc(v) {
    return String(v == null ? '' : v).replace(/[&<>"']/g, (c) => (
      { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  }

  const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

  function fmtPrice(x) {
    if (!isNum(x)) return '—';
    const a = Math.abs(x);
    if (a >= 1000) return x.toFixed(2);
    if (a >= 1) return x.toFixed(a >= 100 ? 2 : 4);
    return x.toPrecision(4);
  }

  function pricePrecision(x) {
    const a = Math.abs(x);
    if (!isNum(a) || a === 0) return 2;
    if (a >= 100) return 2;
    if (a >= 1) return 4;
    return Math.min(10, Math.max(4, 3 - Math.floor(Math.log10(a)) + 1));
  }

  function fmtInt(x) {
    return isNum(x) ? Math.round(x).toLocaleString('en-US') : '—';
  }

  function fmtNum(x, digits = 3) {
    if (!isNum(x)) return '—';
    if (x !== 0 && Math.abs(x) < 0.01) return x.toPrecision(digits);
    return x.toFixed(digits);
  }

  function fmtPct(x, digits = 1) {
    return isNum(x) ? (x * 100).toFixed(digits) + '%' : '—';
  }

  function fmtDuration(s) {
    if (!isNum(s)) return '—';
    if (s < 0) s = 0;
    if (s < 90) return s.toFixed(s < 10 ? 1 : 0) + ' s';
    if (s < 5400) return (s / 60).toFixed(1) + ' min';
    if (s < 172800) return (s / 3600).toFixed(1) + ' h';
    return (s / 86400).toFixed(1) + ' d';
  }

  function fmtTime(ms, tf) {
    if (!isNum(ms)) return '—';
    const iso = new Date(ms).toISOString();
    if (tf && tfMs(tf) >= 36e5) return iso.slice(5, 10) + ' ' + iso.slice(11, 16);
    return iso.slice(11, 19);
  }

  function storageGet(k) {
    try { return window.sessionStorage.getItem(k) || ''; } catch (e) { return ''; }
  }
  function storageSet(k, v) {
    try {
      if (v) window.sessionStorage.setItem(k, v); else window.sessionStorage.removeItem(k);
    } catch (e) { /* storage unavailable: the key lives for this page only */ }
  }

  const seriesKeyOf = (p) => p.exchange + '|' + p.symbol + '|' + p.timeframe;
  const rowKeyOf = (p) => seriesKeyOf(p) + '|' + p.model_id;

  // ---------------------------------------------------------------- state

  const state = {
    apiKey: storageGet(KEY_STORE),
    needAuth: false,
    backoffUntil: 0,         // 429: no request before this (ms epoch)
    errorKind: '',           // '' | '401' | '429' | 'ws'
    latest: new Map(),       // rowKey -> prediction
    series: new Map(),       // seriesKey -> {exchange, symbol, timeframe}
    chosen: '',              // seriesKey drawn on the chart
    userChose: false,
    sort: { col: 'symbol', dir: 1 },
    filter: [],
    page: 0,
    environment: '',
    servedModels: 0,
    msgs: 0,
    msgRate: 0,
    latestLoaded: false,
    modelStages: new Map(),  // model_id|version -> stage
  };

  const dirty = { table: false, select: false, header: false, chart: false, legend: false };
  let frameRequested = false;
  let lastTableRender = 0;
  let tableTimer = 0;

  function schedule() {
    if (frameRequested) return;
    frameRequested = true;
    window.requestAnimationFrame(flush);
  }

  function flush() {
    frameRequested = false;
    if (dirty.select) { dirty.select = false; renderSelect(); }
    if (dirty.header) { dirty.header = false; renderHeader(); }
    if (dirty.chart) { dirty.chart = false; renderOverlays(); }
    if (dirty.legend) { dirty.legend = false; renderLegend(null); }
    if (dirty.table) {
      const wait = lastTableRender + TABLE_MIN_INTERVAL_MS - performance.now();
      if (wait > 0) {
        if (!tableTimer) tableTimer = window.setTimeout(() => { tableTimer = 0; schedule(); }, wait);
      } else {
        dirty.table = false;
        lastTableRender = performance.now();
        renderTable();
      }
    }
  }

  // ---------------------------------------------------------------- API access

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function detailMessage(body) {
    if (!body) return '';
    const d = body.detail;
    if (typeof d === 'string') return d;
    if (Array.isArray(d) && d.length) return d.map((x) => (x && x.msg) || '').filter(Boolean).join('; ');
    return '';
  }

  async function api(path, opts = {}) {
    const now = Date.now();
    if (now < state.backoffUntil) {
      throw new ApiError(429, 'rate limited, retry after ' + Math.ceil((state.backoffUntil - now) / 1000) + ' s');
    }
    if (state.needAuth) throw new ApiError(401, 'waiting for an API key');
    const headers = { Accept: 'application/json' };
    if (state.apiKey) headers['X-API-Key'] = state.apiKey;
    const ctl = new AbortController();
    let timer = 0;
    if (opts.timeout) timer = window.setTimeout(() => ctl.abort(), opts.timeout);
    if (opts.signal) {
      if (opts.signal.aborted) ctl.abort();
      else opts.signal.addEventListener('abort', () => ctl.abort(), { once: true });
    }
    let res;
    let body = null;
    try {
      res = await fetch(path, { headers, signal: ctl.signal, cache: 'no-store', credentials: 'same-origin' });
      const text = await res.text();
      if (text) { try { body = JSON.parse(text); } catch (e) { body = null; } }
    } catch (e) {
      if (ctl.signal.aborted) throw new ApiError(0, opts.timeout ? 'timed out' : 'aborted');
      throw new ApiError(0, 'network error');
    } finally {
      if (timer) window.clearTimeout(timer);
    }
    if (res.status === 401) {
      const msg = detailMessage(body) || 'missing or unknown API key';
      requireAuth('401: ' + msg);
      throw new ApiError(401, msg);
    }
    if (res.status === 429) {
      let secs = parseInt(res.headers.get('Retry-After') || '', 10);
      if (!Number.isFinite(secs) || secs < 1) secs = 5;
      state.backoffUntil = Math.max(state.backoffUntil, Date.now() + secs * 1000);
      showRateLimit();
      throw new ApiError(429, 'rate limited, retry after ' + secs + ' s');
    }
    if (!res.ok) {
      throw new ApiError(res.status, detailMessage(body) || res.statusText || 'error');
    }
    if (state.errorKind === '429') clearError();
    return body;
  }

  const q = (obj) => Object.entries(obj)
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => encodeURIComponent(k) + '=' + encodeURIComponent(v)).join('&');

  // ---------------------------------------------------------------- auth and errors

  const authEl = $('#auth');
  const authErrorEl = $('#auth-error');
  const keyInput = $('#api-key');

  function setError(kind, text) {
    state.errorKind = kind;
    authErrorEl.textContent = text;
    authErrorEl.hidden = !text;
    authErrorEl.dataset.kind = kind;
  }

  function clearError() { setError('', ''); }

  function showRateLimit() {
    const secs = Math.max(0, Math.ceil((state.backoffUntil - Date.now()) / 1000));
    if (secs > 0) setError('429', '429: rate limited, retry after ' + secs + ' s');
    else if (state.errorKind === '429') clearError();
  }

  function requireAuth(message) {
    const first = !state.needAuth;
    state.needAuth = true;
    setError('401', message);
    authEl.hidden = false;
    if (first) {
      keyInput.value = '';
      keyInput.focus();
    }
  }

  $('#auth-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const key = keyInput.value.trim();
    state.apiKey = key;
    storageSet(KEY_STORE, key);
    state.needAuth = false;
    authEl.hidden = true;
    clearError();
    // Start everything again with the new key.
    loadLatest();
    ws.backoff = WS_BACKOFF_MIN_MS;
    connect();
    statusPoller.now();
    scoreboardPoller.now();
    modelsPoller.now();
    if (state.chosen) loadChart(state.chosen);
  });

  // ---------------------------------------------------------------- predictions store

  function upsert(p) {
    if (!p || !p.exchange || !p.symbol || !p.timeframe || !p.model_id) return false;
    const key = rowKeyOf(p);
    const prev = state.latest.get(key);
    if (prev && prev.open_time > p.open_time) return false;
    state.latest.set(key, p);
    const sk = seriesKeyOf(p);
    if (!state.series.has(sk)) {
      state.series.set(sk, { exchange: p.exchange, symbol: p.symbol, timeframe: p.timeframe });
      dirty.select = true;
    }
    dirty.table = true;
    dirty.header = true;
    return true;
  }

  function ingest(list) {
    for (const p of list) upsert(p);
    maybeChooseDefault();
    schedule();
  }

  let latestRetry = 0;
  let lastLatestLoad = 0;
  async function loadLatest() {
    window.clearTimeout(latestRetry);
    lastLatestLoad = Date.now();
    try {
      const d = await api('/v1/predictions/latest');
      state.latestLoaded = true;
      ingest((d && d.predictions) || []);
      if (!state.series.size) latestRetry = window.setTimeout(loadLatest, 5000);
    } catch (e) {
      if (e.status !== 401) {
        const wait = Math.max(5000, state.backoffUntil - Date.now());
        latestRetry = window.setTimeout(loadLatest, wait);
      }
    }
  }

  function defaultSeries() {
    const all = Array.from(state.series.keys()).sort();
    if (!all.length) return '';
    const parts = (k) => k.split('|');
    const pref = ['BTC/USDT', 'BTC/USD', 'BTC/USDC', 'BTC/USDT:USDT'];
    const score = (k) => {
      const [, sym, tf] = parts(k);
      let s = 0;
      if (tf === '1m') s += 100;
      const i = pref.indexOf(sym);
      if (i >= 0) s += 50 - i;
      else if (/^BTC\//.test(sym)) s += 40;
      return s;
    };
    let best = all[0];
    let bestScore = score(best);
    for (const k of all) {
      const s = score(k);
      if (s > bestScore) { best = k; bestScore = s; }
    }
    return best;
  }

  function maybeChooseDefault() {
    if (state.chosen && state.series.has(state.chosen)) return;
    if (state.chosen && state.userChose) return;
    const k = defaultSeries();
    if (k && k !== state.chosen) chooseSeries(k, false);
  }

  // ---------------------------------------------------------------- WebSocket

  const connEl = $('#conn-state');
  const ws = { sock: null, backoff: WS_BACKOFF_MIN_MS, retryAt: 0, timer: 0, live: false, snapshots: 0 };

  function setConn(kind, text) {
    connEl.dataset.state = kind;
    connEl.textContent = text;
  }

  function renderConn() {
    if (ws.live) { setConn('live', '\u25CF live'); return; }
    if (ws.sock) { setConn('connecting', 'connecting\u2026'); return; }
    const secs = Math.max(0, Math.ceil((ws.retryAt - Date.now()) / 1000));
    setConn('down', 'disconnected, retrying in ' + secs + ' s');
  }

  function wsUrl() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/v1/stream';
  }

  function connect() {
    window.clearTimeout(ws.timer);
    ws.timer = 0;
    const old = ws.sock;
    ws.sock = null;
    ws.live = false;
    if (old) { try { old.close(1000); } catch (e) { /* already closed */ } }
    let s;
    try { s = new WebSocket(wsUrl()); } catch (e) { scheduleReconnect(); return; }
    ws.sock = s;
    renderConn();
    s.onopen = () => {
      if (ws.sock !== s) return;
      if (state.apiKey) s.send(JSON.stringify({ action: 'auth', api_key: state.apiKey }));
      else subscribe(s);
    };
    s.onmessage = (ev) => {
      if (ws.sock !== s) return;
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      onStreamMessage(s, m);
    };
    s.onerror = () => { /* a close event follows */ };
    s.onclose = (ev) => {
      if (ws.sock !== s) return;
      ws.sock = null;
      ws.live = false;
      if (ev.code === 1008) requireAuth('401: ' + (ev.reason || 'missing or unknown API key'));
      scheduleReconnect();
    };
  }

  function subscribe(s) {
    s.send(JSON.stringify({ action: 'subscribe' }));
    ws.live = true;
    renderConn();
  }

  function scheduleReconnect() {
    const delay = ws.backoff;
    ws.backoff = Math.min(ws.backoff * 2, WS_BACKOFF_MAX_MS);
    ws.retryAt = Date.now() + delay;
    window.clearTimeout(ws.timer);
    ws.timer = window.setTimeout(connect, delay);
    renderConn();
  }

  let gapTimer = 0;
  let lastGapResync = 0;
  function onStreamMessage(s, m) {
    switch (m.type) {
      case 'prediction': {
        state.msgs += 1;
        if (upsert(m)) onLivePrediction(m);
        schedule();
        break;
      }
      case 'snapshot': {
        ws.backoff = WS_BACKOFF_MIN_MS;
        ws.snapshots += 1;
        ingest(m.predictions || []);
        // After a reconnect the chart may have missed candles and overlays: redraw it.
        if (ws.snapshots > 1 && state.chosen) loadChart(state.chosen);
        break;
      }
      case 'auth':
        if (m.ok) subscribe(s);
        break;
      case 'gap':
        // Some predictions were not streamed: resynchronise (at most every 5 s).
        if (!gapTimer && Date.now() - lastGapResync > 5000) {
          gapTimer = window.setTimeout(() => {
            gapTimer = 0;
            lastGapResync = Date.now();
            loadLatest();
            if (chartState) loadHistory(chartState);
          }, 1000);
        }
        break;
      case 'error':
        $('#chart-status').textContent = 'stream error: ' + (typeof m.detail === 'string' ? m.detail : JSON.stringify(m.detail)).slice(0, 160);
        break;
      default:
        break;
    }
  }

  // ---------------------------------------------------------------- series select

  const selectEl = $('#series-select');

  function renderSelect() {
    const keys = Array.from(state.series.keys()).sort((a, b) => {
      const [ea, sa, ta] = a.split('|');
      const [eb, sb, tb] = b.split('|');
      return sa.localeCompare(sb) || tfMs(ta) - tfMs(tb) || ea.localeCompare(eb);
    });
    const frag = document.createDocumentFragment();
    for (const k of keys) {
      const s = state.series.get(k);
      const o = document.createElement('option');
      o.value = k;
      o.textContent = s.symbol + '  ' + s.timeframe + '  \u00B7 ' + s.exchange;
      frag.appendChild(o);
    }
    selectEl.replaceChildren(frag);
    if (state.chosen) selectEl.value = state.chosen;
  }

  selectEl.addEventListener('change', () => {
    if (selectEl.value) chooseSeries(selectEl.value, true);
  });

  function chooseSeries(key, byUser) {
    if (byUser) state.userChose = true;
    if (key === state.chosen && chartState && chartState.key === key) return;
    state.chosen = key;
    if (selectEl.value !== key) {
      if (dirty.select) renderSelect(); else selectEl.value = key;
      dirty.select = false;
    }
    dirty.table = true; // highlight rows of the chosen series
    schedule();
    loadChart(key);
  }

  // ---------------------------------------------------------------- chart

  const chartEl = $('#chart');
  const legendEl = $('#chart-legend');
  const chartStatusEl = $('#chart-status');

  const COLORS = {
    up: '#26a69a', down: '#ef5350',
    long: ['rgba(38,214,130,0.35)', 'rgba(38,214,130,0.7)', '#2bff9a'],
    short: ['rgba(255,82,82,0.35)', 'rgba(255,82,82,0.7)', '#ff3b5c'],
    neutral: ['rgba(160,170,185,0.14)', 'rgba(170,180,195,0.4)', 'rgba(205,212,224,0.8)'],
    ret: ['#f5c542', '#e59af0', '#7cc7ff'],
    vol: ['rgba(126,170,255,0.75)', 'rgba(255,170,110,0.75)'],
  };
  const CONF_TIER = { VERY_HIGH: 2, HIGH: 1, LOW: 0 };

  let chart = null;
  let candleSeries = null;
  let markersApi = null;
  let chartState = null;  // the drawn series and its data
  let chartSeq = 0;

  function makeChart() {
    chart = LWC.createChart(chartEl, {
      autoSize: true,
      layout: {
        background: { type: LWC.ColorType.Solid, color: '#0e131a' },
        textColor: '#8f9bab',
        fontSize: 11,
        fontFamily: 'system-ui, -apple-system, "Segoe UI", Roboto, Ubuntu, sans-serif',
      },
      grid: { vertLines: { color: '#18202b' }, horzLines: { color: '#18202b' } },
      rightPriceScale: { borderColor: '#243041', scaleMargins: { top: 0.12, bottom: 0.08 } },
      timeScale: { borderColor: '#243041', timeVisible: true, secondsVisible: false, rightOffset: 4 },
      crosshair: { mode: LWC.CrosshairMode.Normal },
    });
    candleSeries = chart.addSeries(LWC.CandlestickSeries, {
      upColor: COLORS.up, downColor: COLORS.down, borderVisible: false,
      wickUpColor: COLORS.up, wickDownColor: COLORS.down, priceLineColor: '#5c6b7d',
    });
    markersApi = LWC.createSeriesMarkers(candleSeries, []);
    chart.subscribeCrosshairMove((param) => {
      if (!chartState) return;
      const bar = param && param.time !== undefined && param.seriesData ? param.seriesData.get(candleSeries) : null;
      renderLegend(bar || null);
    });
  }

  function newChartState(key) {
    const [exchange, symbol, timeframe] = key.split('|');
    return {
      key, exchange, symbol, timeframe, tf: tfMs(timeframe),
      candles: [],            // {time (s), open, high, low, close}
      closeAt: new Map(),     // open_time ms -> close
      lastOpen: 0,            // ms of the newest drawn candle
      preds: new Map(),       // model_id -> Map(open_time ms -> prediction)
      types: new Map(),       // model_id -> model_type
      overlays: new Map(),    // model_id -> {kind, series: [..]}
      wantOpen: 0, tailTimer: 0, tailBusy: false, lastTail: 0, tailTries: 0,
      historyCtl: null, historyNote: '', markers: 0,
    };
  }

  function dropOverlays(cs) {
    if (!cs) return;
    for (const o of cs.overlays.values()) for (const s of o.series) chart.removeSeries(s);
    cs.overlays.clear();
    if (cs.historyCtl) cs.historyCtl.abort();
    window.clearTimeout(cs.tailTimer);
  }

  function toBar(c) {
    return { time: Math.floor(c.open_time / 1000), open: c.open, high: c.high, low: c.low, close: c.close };
  }

  async function loadChart(key) {
    if (!chart) return;
    const seq = ++chartSeq;
    const [exchange, symbol, timeframe] = key.split('|');
    chartStatusEl.textContent = 'loading\u2026';
    let d;
    try {
      d = await api('/v1/candles?' + q({ exchange, symbol, timeframe, limit: CANDLE_LIMIT }));
    } catch (e) {
      if (seq !== chartSeq) return;
      chartStatusEl.textContent = 'candles: ' + (e.status ? e.status + ' ' : '') + e.message;
      if (e.status !== 401 && e.status !== 404) {
        window.setTimeout(() => { if (seq === chartSeq) loadChart(key); }, Math.max(5000, state.backoffUntil - Date.now()));
      }
      return;
    }
    if (seq !== chartSeq) return;
    dropOverlays(chartState);
    const cs = newChartState(key);
    chartState = cs;
    const candles = (d && d.candles) || [];
    for (const c of candles) {
      cs.candles.push(toBar(c));
      cs.closeAt.set(c.open_time, c.close);
    }
    cs.lastOpen = candles.length ? candles[candles.length - 1].open_time : 0;
    const ref = candles.length ? candles[candles.length - 1].close : 1;
    const precision = pricePrecision(ref);
    cs.priceFormat = { type: 'price', precision, minMove: Math.pow(10, -precision) };
    candleSeries.applyOptions({ priceFormat: cs.priceFormat });
    candleSeries.setData(cs.candles);
    markersApi.setMarkers([]);
    // What the table already knows (the newest prediction per model) draws at once.
    for (const p of state.latest.values()) if (seriesKeyOf(p) === key) addPrediction(cs, p);
    renderOverlays();
    chart.timeScale().fitContent();
    chartEl.dataset.series = key;
    chartEl.dataset.candles = String(cs.candles.length);
    $('#chart-empty').hidden = true;
    chartStatusEl.textContent = '';
    renderLegend(null);
    loadHistory(cs);
  }

  // The prediction history is read from the log: possibly slow, never blocks the chart.
  async function loadHistory(cs) {
    if (!cs.candles.length || cs !== chartState) return;
    if (cs.historyCtl) cs.historyCtl.abort();
    const ctl = new AbortController();
    cs.historyCtl = ctl;
    const start = cs.candles[0].time * 1000;
    let cursor = null;
    let pages = 0;
    let added = 0;
    cs.historyNote = 'history\u2026';
    try {
      while (pages < HISTORY_MAX_PAGES && (pages === 0 || cursor)) {
        const query = { symbol: cs.symbol, timeframe: cs.timeframe, start, limit: HISTORY_PAGE };
        if (cursor) query.cursor = cursor;
        const d = await api('/v1/predictions?' + q(query), { timeout: HISTORY_TIMEOUT_MS, signal: ctl.signal });
        if (cs !== chartState || ctl.signal.aborted) return;
        for (const p of (d && d.predictions) || []) {
          if (p.exchange === cs.exchange && p.timeframe === cs.timeframe) { addPrediction(cs, p); added += 1; }
        }
        cursor = d ? d.next_cursor : null;
        pages += 1;
        dirty.chart = true;
        schedule();
      }
      cs.historyNote = '';
    } catch (e) {
      if (cs !== chartState || (ctl.signal.aborted && e.message === 'aborted')) return;
      cs.historyNote = 'prediction history: ' + (e.status ? e.status + ' ' : '') + e.message + ' (showing live only)';
    } finally {
      if (cs === chartState) {
        chartEl.dataset.history = String(added);
        dirty.legend = true;
        schedule();
      }
    }
  }

  function addPrediction(cs, p) {
    let m = cs.preds.get(p.model_id);
    if (!m) { m = new Map(); cs.preds.set(p.model_id, m); }
    m.set(p.open_time, p);
    cs.types.set(p.model_id, p.model_type);
  }

  function onLivePrediction(p) {
    const cs = chartState;
    if (!cs || seriesKeyOf(p) !== cs.key) return;
    addPrediction(cs, p);
    dirty.chart = true;
    if (p.open_time > cs.lastOpen) requestTail(cs, p.open_time);
  }

  // New closed candles: fetched at most once a second, then series.update().
  function requestTail(cs, openTime) {
    cs.wantOpen = Math.max(cs.wantOpen, openTime);
    if (cs.tailBusy || cs.tailTimer) return;
    const wait = Math.max(0, cs.lastTail + 1000 - Date.now());
    cs.tailTimer = window.setTimeout(() => { cs.tailTimer = 0; fetchTail(cs); }, wait);
  }

  async function fetchTail(cs) {
    if (cs !== chartState) return;
    cs.tailBusy = true;
    cs.lastTail = Date.now();
    const missing = cs.tf ? Math.round((cs.wantOpen - cs.lastOpen) / cs.tf) : 1;
    if (missing > CANDLE_LIMIT - 10 || cs.candles.length > 4 * CANDLE_LIMIT) {
      cs.tailBusy = false;
      loadChart(cs.key); // far behind, or grown large: redraw from scratch
      return;
    }
    const before = cs.lastOpen;
    try {
      const d = await api('/v1/candles?' + q({
        exchange: cs.exchange, symbol: cs.symbol, timeframe: cs.timeframe, limit: Math.max(3, missing + 2),
      }));
      if (cs !== chartState) return;
      for (const c of (d && d.candles) || []) {
        if (c.open_time < cs.lastOpen) continue;
        const bar = toBar(c);
        if (c.open_time === cs.lastOpen && cs.candles.length) cs.candles[cs.candles.length - 1] = bar;
        else cs.candles.push(bar);
        cs.closeAt.set(c.open_time, c.close);
        cs.lastOpen = c.open_time;
        candleSeries.update(bar);
      }
      chartEl.dataset.candles = String(cs.candles.length);
      dirty.chart = true;
      schedule();
    } catch (e) {
      /* retried below while a newer prediction is waiting */
    } finally {
      cs.tailBusy = false;
    }
    if (cs !== chartState) return;
    cs.tailTries = cs.lastOpen > before ? 0 : cs.tailTries + 1;
    if (cs.wantOpen > cs.lastOpen && cs.tailTries < 5) requestTail(cs, cs.wantOpen);
  }

  function markerFor(p) {
    const tier = CONF_TIER[p.confidence] !== undefined ? CONF_TIER[p.confidence] : 0;
    const time = Math.floor(p.open_time / 1000);
    if (p.signal === 'LONG') {
      return { time, position: 'belowBar', shape: 'arrowUp', color: COLORS.long[tier], size: tier === 2 ? 1.4 : 1 };
    }
    if (p.signal === 'SHORT') {
      return { time, position: 'aboveBar', shape: 'arrowDown', color: COLORS.short[tier], size: tier === 2 ? 1.4 : 1 };
    }
    return { time, position: 'aboveBar', shape: 'circle', color: COLORS.neutral[tier], size: 0.35 };
  }

  function overlayFor(cs, modelId, kind) {
    let o = cs.overlays.get(modelId);
    if (o) return o;
    const common = {
      lastValueVisible: false, priceLineVisible: false, crosshairMarkerVisible: false,
      priceFormat: cs.priceFormat, lineWidth: 1,
    };
    const nth = Array.from(cs.overlays.values()).filter((x) => x.kind === kind).length;
    if (kind === 'return') {
      const color = COLORS.ret[nth % COLORS.ret.length];
      o = { kind, series: [chart.addSeries(LWC.LineSeries, { ...common, color, lineWidth: 2, title: '', pointMarkersVisible: false })] };
    } else {
      const color = COLORS.vol[nth % COLORS.vol.length];
      const opts = { ...common, color, lineStyle: LWC.LineStyle.Dashed };
      o = { kind, series: [chart.addSeries(LWC.LineSeries, opts), chart.addSeries(LWC.LineSeries, opts)] };
    }
    cs.overlays.set(modelId, o);
    return o;
  }

  function renderOverlays() {
    const cs = chartState;
    if (!cs || !chart) return;
    const first = cs.candles.length ? cs.candles[0].time * 1000 : Infinity;
    const markers = [];
    let points = 0;
    for (const [modelId, byTime] of cs.preds) {
      // Keep memory bounded to the drawn window.
      if (byTime.size > cs.candles.length + 50) {
        for (const t of byTime.keys()) if (t < first - cs.tf) byTime.delete(t);
      }
      const type = cs.types.get(modelId);
      const list = Array.from(byTime.values()).filter((p) => p.open_time >= first).sort((a, b) => a.open_time - b.open_time);
      if (type === 'direction') {
        for (const p of list) if (cs.closeAt.has(p.open_time)) markers.push(markerFor(p));
      } else if (type === 'return') {
        // A forecast of the next close: drawn at the candle it forecasts.
        const data = [];
        for (const p of list) {
          if (isNum(p.predicted_price)) data.push({ time: Math.floor((p.open_time + cs.tf) / 1000), value: p.predicted_price });
        }
        if (data.length) { overlayFor(cs, modelId, 'return').series[0].setData(data); points += data.length; }
      } else if (type === 'volatility') {
        const up = [];
        const lo = [];
        for (const p of list) {
          const close = cs.closeAt.get(p.open_time);
          if (!isNum(close) || !isNum(p.value)) continue;
          const time = Math.floor((p.open_time + cs.tf) / 1000);
          up.push({ time, value: close * Math.exp(p.value) });
          lo.push({ time, value: close * Math.exp(-p.value) });
        }
        if (up.length) {
          const o = overlayFor(cs, modelId, 'volatility');
          o.series[0].setData(up);
          o.series[1].setData(lo);
          points += up.length;
        }
      }
    }
    markers.sort((a, b) => a.time - b.time);
    markersApi.setMarkers(markers);
    cs.markers = markers.length;
    chartEl.dataset.markers = String(markers.length);
    chartEl.dataset.overlayPoints = String(points);
    renderLegend(null);
  }

  function newestOf(cs, modelId) {
    const m = cs.preds.get(modelId);
    let best = null;
    if (m) for (const p of m.values()) if (!best || p.open_time > best.open_time) best = p;
    return best;
  }

  function renderLegend(bar) {
    const cs = chartState;
    if (!cs) { legendEl.innerHTML = ''; return; }
    const b = bar || cs.candles[cs.candles.length - 1];
    const parts = [];
    parts.push('<span class="lg-title">' + esc(cs.symbol) + ' <b>' + esc(cs.timeframe) + '</b> <span class="muted">' + esc(cs.exchange) + '</span></span>');
    if (b && isNum(b.open)) {
      const cls = b.close >= b.open ? 'pos' : 'neg';
      parts.push('<span class="lg-ohlc">O <b>' + fmtPrice(b.open) + '</b> H <b>' + fmtPrice(b.high) +
        '</b> L <b>' + fmtPrice(b.low) + '</b> C <b class="' + cls + '">' + fmtPrice(b.close) + '</b></span>');
    }
    const models = Array.from(cs.preds.keys()).sort();
    const bits = [];
    for (const id of models) {
      const p = newestOf(cs, id);
      if (!p) continue;
      let txt = '';
      if (p.model_type === 'direction') {
        txt = '<span class="sig-' + esc((p.signal || 'none').toLowerCase()) + '">' + esc(p.signal || '—') + '</span> ' + fmtPct(p.prob_up) + ' ' + esc(confLabel(p.confidence));
      } else if (p.model_type === 'return') {
        txt = '\u2192 ' + fmtPrice(p.predicted_price);
      } else if (p.model_type === 'volatility') {
        txt = '\u00B1' + fmtPct(p.value, 3);
      } else {
        txt = fmtNum(p.value);
      }
      bits.push('<span class="lg-model"><span class="muted">' + esc(id) + '</span> ' + txt + '</span>');
    }
    if (bits.length) parts.push('<span class="lg-models">' + bits.join('') + '</span>');
    if (cs.historyNote) parts.push('<span class="muted">' + esc(cs.historyNote) + '</span>');
    legendEl.innerHTML = parts.join('');
  }

  // ---------------------------------------------------------------- predictions table

  const tableEl = $('#predictions');
  const tbody = $('#predictions tbody');
  const pageInfo = $('#page-info');
  const prevBtn = $('#page-prev');
  const nextBtn = $('#page-next');
  const emptyNote = $('#predictions-empty');
  const SIGNAL_RANK = { LONG: 3, NEUTRAL: 2, SHORT: 1 };
  const CONF_RANK = { VERY_HIGH: 3, HIGH: 2, LOW: 1 };

  function confLabel(c) { return c ? c.replace('_', ' ').toLowerCase() : ''; }

  function primaryValue(p) {
    return isNum(p.prob_up) ? p.prob_up : (isNum(p.value) ? p.value : -Infinity);
  }

  const SORTERS = {
    symbol: (a, b) => a.symbol.localeCompare(b.symbol) || a.exchange.localeCompare(b.exchange) ||
      tfMs(a.timeframe) - tfMs(b.timeframe) || a.model_id.localeCompare(b.model_id),
    timeframe: (a, b) => tfMs(a.timeframe) - tfMs(b.timeframe),
    model: (a, b) => a.model_id.localeCompare(b.model_id),
    signal: (a, b) => (SIGNAL_RANK[a.signal] || 0) - (SIGNAL_RANK[b.signal] || 0),
    value: (a, b) => primaryValue(a) - primaryValue(b),
    confidence: (a, b) => (CONF_RANK[a.confidence] || 0) - (CONF_RANK[b.confidence] || 0),
    trend: (a, b) => (a.trend || '').localeCompare(b.trend || ''),
    latency: (a, b) => (a.latency_ms || 0) - (b.latency_ms || 0),
    time: (a, b) => a.open_time - b.open_time,
  };

  function haystack(p) {
    if (p._hay === undefined) {
      Object.defineProperty(p, '_hay', {
        value: [p.exchange, p.symbol, p.timeframe, p.model_id, p.model_type, p.model_version,
          p.signal || '', p.confidence || '', p.trend || ''].join(' ').toLowerCase(),
        enumerable: false,
      });
    }
    return p._hay;
  }

  function visibleRows() {
    let rows = Array.from(state.latest.values());
    if (state.filter.length) rows = rows.filter((p) => { const h = haystack(p); return state.filter.every((w) => h.includes(w)); });
    const cmp = SORTERS[state.sort.col] || SORTERS.symbol;
    const dir = state.sort.dir;
    rows.sort((a, b) => dir * cmp(a, b) || SORTERS.symbol(a, b));
    return rows;
  }

  function valueCell(p) {
    switch (p.model_type) {
      case 'direction': return { text: fmtPct(p.prob_up), title: 'P(up) ' + p.prob_up };
      case 'return': {
        const r = isNum(p.value) ? (p.value >= 0 ? '+' : '') + (p.value * 1e4).toFixed(2) + ' bp' : '—';
        return { text: '\u2192 ' + fmtPrice(p.predicted_price), title: 'predicted next close; log return ' + r + ' (' + p.value + ')' };
      }
      case 'volatility': return { text: '\u03C3 ' + fmtPct(p.value, 3), title: 'predicted std of log returns ' + p.value };
      case 'swing': {
        const o = p.outputs || {};
        if (isNum(o.p_swing_high) || isNum(o.p_swing_low)) {
          return { text: 'H ' + fmtPct(o.p_swing_high, 0) + ' / L ' + fmtPct(o.p_swing_low, 0), title: JSON.stringify(o) };
        }
        return { text: fmtNum(p.value), title: JSON.stringify(o) };
      }
      default: return { text: fmtNum(p.value), title: JSON.stringify(p.outputs || {}) };
    }
  }

  function makeRow() {
    const tr = document.createElement('tr');
    tr.innerHTML = '<td class="c-sym"><span class="sym"></span><span class="exch"></span></td>' +
      '<td class="c-tf"></td><td class="c-model"><span class="mid"></span><span class="ver"></span></td>' +
      '<td class="c-sig"><span class="sig"></span></td><td class="num c-val"></td><td class="c-conf"></td>' +
      '<td class="c-trend"></td><td class="num c-lat"></td><td class="c-time"></td>';
    tr.tabIndex = 0;
    return tr;
  }

  function fillRow(tr, p, key) {
    const prev = tr._p;
    const sameKey = !!prev && tr.dataset.key === key;
    tr._p = p;
    const cells = tr.cells;
    if (!sameKey) {
      tr.dataset.key = key;
      cells[0].firstChild.textContent = p.symbol;
      cells[0].lastChild.textContent = p.exchange;
      cells[1].textContent = p.timeframe;
      cells[2].firstChild.textContent = p.model_id;
    }
    tr.dataset.openTime = String(p.open_time);
    cells[2].lastChild.textContent = p.model_version || '';
    const sig = cells[3].firstChild;
    sig.textContent = p.signal || '—';
    sig.className = 'sig sig-' + (p.signal ? p.signal.toLowerCase() : 'none');
    const v = valueCell(p);
    cells[4].textContent = v.text;
    cells[4].title = v.title;
    cells[5].textContent = confLabel(p.confidence) || '—';
    cells[5].className = 'c-conf conf-' + (p.confidence || 'none').toLowerCase();
    cells[6].textContent = p.trend ? p.trend.toLowerCase() : '—';
    cells[6].className = 'c-trend trend-' + (p.trend || 'none').toLowerCase();
    cells[7].textContent = isNum(p.latency_ms) ? p.latency_ms.toFixed(1) : '—';
    cells[8].textContent = fmtTime(p.open_time, p.timeframe);
    cells[8].title = p.open_time_iso || '';
    tr.classList.toggle('chosen', seriesKeyOf(p) === state.chosen);
    if (sameKey && prev !== p && prev.open_time !== p.open_time && cells[4].animate) {
      cells[4].animate([{ color: '#9cc2ff' }, { color: 'inherit' }], { duration: 600, easing: 'ease-out' });
    }
  }

  function renderTable() {
    const rows = visibleRows();
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
    if (state.page >= pages) state.page = pages - 1;
    if (state.page < 0) state.page = 0;
    const start = state.page * PAGE_SIZE;
    const slice = rows.slice(start, start + PAGE_SIZE);
    const trs = tbody.rows;
    for (let i = 0; i < slice.length; i += 1) {
      let tr = trs[i];
      if (!tr) { tr = makeRow(); tbody.appendChild(tr); }
      const p = slice[i];
      const key = rowKeyOf(p);
      if (tr._p !== p || tr.dataset.key !== key) fillRow(tr, p, key);
      else tr.classList.toggle('chosen', seriesKeyOf(p) === state.chosen);
    }
    while (tbody.rows.length > slice.length) tbody.deleteRow(tbody.rows.length - 1);
    const exchanges = new Set();
    for (const sv of state.series.values()) { exchanges.add(sv.exchange); if (exchanges.size > 1) break; }
    tableEl.classList.toggle('one-exchange', exchanges.size <= 1);
    tableEl.dataset.rows = String(state.latest.size); // every row held, filtered or not
    pageInfo.textContent = rows.length
      ? (start + 1) + '\u2013' + (start + slice.length) + ' of ' + rows.length + ' \u00B7 page ' + (state.page + 1) + '/' + pages
      : '0 of 0';
    prevBtn.disabled = state.page <= 0;
    nextBtn.disabled = state.page >= pages - 1;
    emptyNote.hidden = rows.length > 0;
    emptyNote.textContent = state.latest.size ? 'no row matches the filter' : 'waiting for predictions\u2026';
  }

  document.querySelectorAll('#predictions th[data-sort]').forEach((th) => {
    th.tabIndex = 0;
    const activate = () => {
      const col = th.dataset.sort;
      if (state.sort.col === col) state.sort.dir = -state.sort.dir;
      else state.sort = { col, dir: (col === 'time' || col === 'latency' || col === 'value' || col === 'confidence') ? -1 : 1 };
      document.querySelectorAll('#predictions th[data-sort]').forEach((h) => {
        h.removeAttribute('aria-sort');
        h.classList.remove('sorted-asc', 'sorted-desc');
      });
      th.setAttribute('aria-sort', state.sort.dir > 0 ? 'ascending' : 'descending');
      th.classList.add(state.sort.dir > 0 ? 'sorted-asc' : 'sorted-desc');
      state.page = 0;
      renderTableNow();
    };
    th.addEventListener('click', activate);
    th.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); activate(); } });
  });
  $('#predictions th[data-sort="symbol"]').classList.add('sorted-asc');

  function renderTableNow() {
    dirty.table = false;
    lastTableRender = performance.now();
    renderTable();
  }

  let filterTimer = 0;
  $('#filter').addEventListener('input', (ev) => {
    window.clearTimeout(filterTimer);
    filterTimer = window.setTimeout(() => {
      state.filter = ev.target.value.toLowerCase().split(/\s+/).filter(Boolean);
      state.page = 0;
      renderTableNow();
    }, 120);
  });
  prevBtn.addEventListener('click', () => { state.page -= 1; renderTableNow(); });
  nextBtn.addEventListener('click', () => { state.page += 1; renderTableNow(); });

  function rowActivate(ev) {
    const tr = ev.target.closest('tr[data-key]');
    if (!tr) return;
    const parts = tr.dataset.key.split('|');
    chooseSeries(parts.slice(0, 3).join('|'), true);
    chartEl.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  }
  tbody.addEventListener('click', rowActivate);
  tbody.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') rowActivate(ev); });

  // ---------------------------------------------------------------- header

  function renderHeader() {
    $('#env').textContent = state.environment || '…';
    const bits = [
      '<span><b>' + fmtInt(state.series.size) + '</b> series</span>',
      '<span><b>' + fmtInt(state.latest.size) + '</b> predictions</span>',
      '<span><b>' + (state.msgRate < 10 ? state.msgRate.toFixed(1) : fmtInt(state.msgRate)) + '</b> msg/s</span>',
    ];
    if (state.servedModels) bits.push('<span><b>' + state.servedModels + '</b> models serving</span>');
    $('#counts').innerHTML = bits.join('');
  }

  // ---------------------------------------------------------------- pollers

  function poller(fn, every) {
    let timer = 0;
    let busy = false;
    const run = async () => {
      window.clearTimeout(timer);
      if (busy) return;
      busy = true;
      try {
        if (!document.hidden || !state.latestLoaded) await fn();
      } catch (e) {
        /* shown by fn where it matters; the next run is still on schedule */
      } finally {
        busy = false;
        timer = window.setTimeout(run, Math.max(every, state.backoffUntil - Date.now()));
      }
    };
    return { now: run };
  }

  // ---------------------------------------------------------------- scoreboard

  const LOWER_IS_BETTER = { brier: true, log_loss: true, mae: true, rmse: true, accuracy: false };
  const METRIC_LABEL = { accuracy: 'accuracy', brier: 'Brier', log_loss: 'log loss', mae: 'MAE', rmse: 'RMSE' };

  function fmtMetric(name, v) {
    if (!isNum(v)) return '—';
    if (name === 'accuracy') return fmtPct(v, 1);
    if (name === 'mae' || name === 'rmse') return Math.abs(v) < 0.01 ? (v * 1e4).toFixed(2) + ' bp' : v.toPrecision(3);
    return v.toFixed(4);
  }

  function calibrationSvg(cal) {
    const W = 64;
    const H = 48;
    const pad = 3;
    const pts = (cal || []).filter((c) => isNum(c.p) && isNum(c.observed)).sort((a, b) => a.p - b.p);
    // Zoom onto the populated range (bins usually sit near 0.5), keeping the diagonal.
    const vals = pts.flatMap((c) => [c.p, c.observed]);
    let lo = vals.length ? Math.max(0, Math.min(...vals) - 0.05) : 0;
    let hi = vals.length ? Math.min(1, Math.max(...vals) + 0.05) : 1;
    if (hi - lo < 0.2) { const mid = (hi + lo) / 2; lo = Math.max(0, mid - 0.1); hi = Math.min(1, lo + 0.2); lo = hi - 0.2; }
    const x = (p) => pad + (p - lo) / (hi - lo) * (W - 2 * pad);
    const y = (p) => H - pad - (p - lo) / (hi - lo) * (H - 2 * pad);
    const maxN = Math.max(1, ...pts.map((c) => c.n || 0));
    let s = '<svg class="rel" viewBox="0 0 ' + W + ' ' + H + '" width="' + W + '" height="' + H + '" role="img" aria-label="reliability curve">';
    s += '<title>reliability: predicted P(up) (x) vs observed frequency (y), ' + lo.toFixed(2) + '\u2013' + hi.toFixed(2) + '; dashed = perfectly calibrated</title>';
    s += '<rect x="' + pad + '" y="' + pad + '" width="' + (W - 2 * pad) + '" height="' + (H - 2 * pad) + '" class="rel-box"/>';
    s += '<line x1="' + x(lo).toFixed(1) + '" y1="' + y(lo).toFixed(1) + '" x2="' + x(hi).toFixed(1) + '" y2="' + y(hi).toFixed(1) + '" class="rel-diag"/>';
    if (pts.length > 1) {
      s += '<polyline class="rel-line" points="' + pts.map((c) => x(c.p).toFixed(1) + ',' + y(c.observed).toFixed(1)).join(' ') + '"/>';
    }
    for (const c of pts) {
      const r = 1.3 + 2.2 * Math.sqrt((c.n || 0) / maxN);
      s += '<circle class="rel-pt" cx="' + x(c.p).toFixed(1) + '" cy="' + y(c.observed).toFixed(1) + '" r="' + r.toFixed(1) + '">' +
        '<title>p ' + c.p.toFixed(3) + ' \u2192 observed ' + c.observed.toFixed(3) + ' (n ' + (c.n || 0) + ')</title></circle>';
    }
    s += '<text x="' + (pad + 1) + '" y="' + (H - pad - 1) + '" class="rel-lbl">' + lo.toFixed(2) + '</text>';
    s += '<text x="' + (W - pad - 1) + '" y="' + (pad + 7) + '" class="rel-lbl" text-anchor="end">' + hi.toFixed(2) + '</text>';
    return s + '</svg>';
  }

  // A challenger against its champion on the same candles: mean loss improvement and its
  // 95% paired block-bootstrap interval (> 0 favours the challenger).
  function comparisonLine(c) {
    if (!c) return '';
    if (!isNum(c.improvement)) return '<div class="cmp muted small">vs champion: ' + esc(c.verdict) + '</div>';
    const ci = c.ci95 ? ' [' + c.ci95[0].toFixed(5) + ', ' + c.ci95[1].toFixed(5) + ']' : '';
    const cls = c.verdict === 'challenger better' ? 'better' : c.verdict === 'champion better' ? 'worse' : 'same';
    return '<div class="cmp small ' + cls + '" title="mean loss of champion ' + esc(c.champion_version || '?') +
      ' minus this version on ' + fmtInt(c.pairs) + ' shared candles in ' + fmtInt(c.blocks) + ' blocks; 95% paired bootstrap interval">' +
      'vs champion ' + esc(c.champion_version || '?') + ': ' + (c.improvement >= 0 ? '+' : '') + c.improvement.toFixed(5) + ci +
      ' \u00B7 ' + esc(c.verdict) + '</div>';
  }

  async function refreshScoreboard() {
    const note = $('#scoreboard-note');
    let d;
    try {
      d = await api('/v1/scoreboard');
    } catch (e) {
      note.textContent = 'scoreboard: ' + (e.status ? e.status + ' ' : '') + e.message;
      throw e;
    }
    note.textContent = 'window ' + fmtInt(d.window) + ' outcomes \u00B7 ' + fmtInt(d.pending) + ' pending \u00B7 every 10 s';
    const rows = (d.models || []).slice().sort((a, b) =>
      tfMs(a.timeframe) - tfMs(b.timeframe) || a.model_id.localeCompare(b.model_id));
    const html = rows.map((m) => {
      const metrics = m.metrics || {};
      const base = m.baseline || {};
      const lines = Object.keys(metrics).map((k) => {
        const v = metrics[k];
        const b = base[k];
        let cls = 'same';
        let mark = '=';
        if (isNum(v) && isNum(b) && v !== b) {
          const better = LOWER_IS_BETTER[k] ? v < b : v > b;
          cls = better ? 'better' : 'worse';
          mark = better ? '\u25B2' : '\u25BC';
        } else if (!isNum(b)) { mark = ''; }
        return '<div class="metric ' + cls + '"><span class="m-name">' + esc(METRIC_LABEL[k] || k) + '</span>' +
          '<span class="m-val">' + fmtMetric(k, v) + '</span><span class="m-vs">vs</span>' +
          '<span class="m-base">' + fmtMetric(k, b) + '</span><span class="m-mark" title="' +
          (cls === 'better' ? 'better than baseline' : cls === 'worse' ? 'worse than baseline' : '') + '">' + mark + '</span></div>';
      }).join('');
      const stage = state.modelStages.get(m.model_id + '|' + m.version);
      const challenger = m.role && m.role !== 'production';
      const servingTxt = challenger
        ? '<span class="badge warn" title="' + (m.role === 'shadow' ? 'logged and scored, never published' : 'publishes for its share of the symbols') + '">' + esc(m.role) + '</span>'
        : m.serving
          ? (m.serving === m.version ? '<span class="badge ok" title="serving now">serving</span>' : '<span class="badge warn">serving ' + esc(m.serving) + '</span>')
          : '<span class="badge off">not serving</span>';
      return '<tr data-model="' + esc(m.model_id) + '" data-timeframe="' + esc(m.timeframe) + '" data-role="' + esc(m.role || 'production') + '">' +
        '<td class="sb-model"><div class="mid">' + esc(m.model_id) + ' <span class="ver"' + (stage ? ' title="' + esc(stage) + '"' : '') + '>' + esc(m.version || '—') + '</span> ' + servingTxt + '</div>' +
        '<div class="muted small" title="outcomes in the sliding window; scored since start' + (m.expired ? '; expired unscored' : '') + '">' +
        fmtInt(m.count) + ' in window \u00B7 ' + fmtInt(m.scored) + ' scored' + (m.expired ? ' \u00B7 ' + fmtInt(m.expired) + ' expired' : '') + '</div></td>' +
        '<td class="metrics">' + (lines || '<span class="muted">no outcomes yet</span>') + (challenger ? comparisonLine(m.comparison) : '') + '</td>' +
        '<td class="rel-cell">' + (m.model_type === 'direction' && m.calibration ? calibrationSvg(m.calibration) : '<span class="muted small">—</span>') + '</td>' +
        '</tr>';
    }).join('');
    $('#scoreboard tbody').innerHTML = html || '<tr><td colspan="3" class="muted">no scored models yet</td></tr>';
  }

  async function refreshModels() {
    const d = await api('/v1/models');
    state.modelStages.clear();
    for (const m of (d && d.models) || []) state.modelStages.set(m.model_id + '|' + m.version, m.stage);
  }

  // ---------------------------------------------------------------- pipeline health

  const feedPrev = new Map(); // feed name -> {candles, t}

  function kv(label, value, cls) {
    return '<div class="kv' + (cls ? ' ' + cls : '') + '"><span class="k">' + esc(label) + '</span><span class="v">' + value + '</span></div>';
  }

  function downCard(attr, name, a) {
    return '<div class="card down" ' + attr + '><div class="card-head"><span class="card-title">' + esc(name) +
      '</span><span class="badge bad">DOWN</span></div><div class="err">' + esc(a.error || 'not answering') + '</div></div>';
  }

  function feedStaleness(f) {
    const src = f.source || {};
    if (isNum(src.staleness)) return { text: fmtDuration(src.staleness), cls: src.staleness > 120 ? 'warn' : '' };
    if (isNum(f.staleness)) return { text: fmtDuration(f.staleness), cls: f.staleness > 120 ? 'warn' : '' };
    if (OFFLINE_SOURCES.has(src.kind)) return { text: 'n/a (offline)', cls: 'muted' };
    if (!isNum(f.last_open_time)) return { text: '—', cls: '' };
    const tf = tfMs((f.gate && f.gate.timeframe) || '1m') || 60000;
    const s = (Date.now() - f.last_open_time - tf) / 1000;
    return { text: fmtDuration(Math.max(0, s)), cls: s > 3 * tf / 1000 ? 'bad' : s > tf / 1000 ? 'warn' : '' };
  }

  function feedCard(f, i, now) {
    const name = f.name || ('feed ' + i);
    if (f.up === false) return downCard('data-feed="' + esc(name) + '"', name, f);
    const g = f.gate || {};
    let rate = '—';
    const prev = feedPrev.get(name);
    if (isNum(f.candles)) {
      if (prev && now > prev.t && f.candles >= prev.candles) rate = ((f.candles - prev.candles) / ((now - prev.t) / 1000)).toFixed(1);
      feedPrev.set(name, { candles: f.candles, t: now });
    }
    const st = feedStaleness(f);
    const badge = f.running ? '<span class="badge ok">running</span>'
      : f.done ? '<span class="badge off">done</span>' : '<span class="badge bad">stopped</span>';
    const src = f.source || {};
    const quarantined = Object.entries(g.quarantined || {}).filter(([, n]) => n);
    const rejects = quarantined.length
      ? quarantined.sort((a, b) => b[1] - a[1]).map(([r, n]) => '<span class="chip bad">' + esc(r) + ' ' + fmtInt(n) + '</span>').join('')
      : '<span class="muted">none</span>';
    const unrep = (g.gaps_unrepairable || 0);
    let html = '<div class="card" data-feed="' + esc(name) + '"><div class="card-head"><span class="card-title">' + esc(name) + '</span>' +
      '<span class="muted small">' + esc(src.kind || '') + (g.exchange ? ' \u00B7 ' + esc(g.exchange) : '') + (g.timeframe ? ' ' + esc(g.timeframe) : '') +
      (isNum(f.epoch) ? ' \u00B7 epoch ' + f.epoch : '') + '</span>' + badge + '</div><div class="kvs">';
    html += kv('candles/s', rate);
    html += kv('candles', fmtInt(f.candles));
    html += kv('staleness', st.text, st.cls);
    html += kv('last candle', esc(fmtTime(f.last_open_time)));
    html += kv('received', fmtInt(g.received));
    html += kv('rejected', fmtInt(g.rejected), g.rejected ? 'warn' : '');
    html += kv('duplicates', fmtInt(g.duplicates));
    html += kv('gaps found', fmtInt(g.gaps_detected));
    html += kv('gaps repaired', fmtInt(g.gaps_repaired));
    html += kv('unrepairable', fmtInt(unrep), unrep ? 'bad' : '');
    if (isNum(src.stale_count)) html += kv('stale symbols', fmtInt(src.stale_count), src.stale_count ? 'warn' : '');
    if (f.source_errors || f.step_errors) html += kv('errors', fmtInt((f.source_errors || 0) + (f.step_errors || 0)), 'bad');
    html += '</div><div class="rejects"><span class="k">rejects by reason</span> ' + rejects + '</div></div>';
    return html;
  }

  function shardCard(s, i) {
    const n = isNum(s.shard) ? s.shard : i;
    if (s.up === false) return downCard('data-shard="' + esc(n) + '"', 'shard ' + n, s);
    const lat = s.latency_ms || {};
    const tfs = Object.keys(lat).sort((a, b) => tfMs(a) - tfMs(b));
    let rows = tfs.map((tf) => {
      const l = lat[tf] || {};
      const cls = isNum(l.p99) && l.p99 > 1000 ? 'bad' : isNum(l.p99) && l.p99 > 250 ? 'warn' : '';
      return '<tr><td>' + esc(tf) + '</td><td class="num">' + fmtInt(l.ticks) + '</td><td class="num">' + fmtNum(l.p50, 1) +
        '</td><td class="num ' + cls + '">' + fmtNum(l.p99, 1) + '</td><td class="num">' + fmtNum(l.max, 1) + '</td></tr>';
    }).join('');
    if (!rows) rows = '<tr><td colspan="5" class="muted">no ticks yet</td></tr>';
    let html = '<div class="card" data-shard="' + esc(n) + '"><div class="card-head"><span class="card-title">shard ' + esc(n) + '</span>' +
      '<span class="muted small">' + fmtInt(s.symbols) + ' symbols</span></div><div class="kvs">';
    html += kv('candles in', fmtInt(s.candles_in));
    html += kv('rows predicted', fmtInt(s.rows_predicted));
    if (s.model_errors) html += kv('model errors', fmtInt(s.model_errors), 'bad');
    if (s.batches_given_up) html += kv('batches given up', fmtInt(s.batches_given_up), 'bad');
    html += '</div><table class="mini"><thead><tr><th>tick latency</th><th class="num">ticks</th><th class="num">p50 ms</th><th class="num">p99 ms</th><th class="num">max</th></tr></thead><tbody>' +
      rows + '</tbody></table></div>';
    return html;
  }

  function sinkCard(k) {
    if (!k) return '';
    if (k.up === false) return downCard('data-sink="sink"', 'sink', k);
    let html = '<div class="card" data-sink="sink"><div class="card-head"><span class="card-title">sink</span></div><div class="kvs">';
    html += kv('received', fmtInt(k.received));
    html += kv('written', fmtInt(k.written));
    html += kv('duplicates dropped', fmtInt(k.duplicates_dropped));
    html += kv('buffered', fmtInt(k.buffered));
    const bus = k.bus || {};
    if (bus.state && bus.state !== 'off') {
      const down = bus.state === 'down';
      html += kv('bus', down ? 'down ' + fmtDuration(bus.down_for_s) + ', retry in ' + fmtDuration(bus.retry_in_s) : esc(bus.state), down ? 'bad' : bus.state === 'up' ? 'good' : '');
      html += kv('bus published', fmtInt(k.bus_published));
      html += kv('bus waiting', fmtInt(bus.waiting), bus.waiting ? 'warn' : '');
      html += kv('bus dropped', fmtInt(bus.dropped), bus.dropped ? 'bad' : '');
    } else {
      html += kv('bus', 'off');
    }
    return html + '</div></div>';
  }

  function driftCard(drift) {
    if (!drift) return '';
    if (drift.up === false) return downCard('data-drift="drift"', 'drift', drift);
    const tfs = Object.keys(drift).sort((a, b) => tfMs(a) - tfMs(b));
    const rows = tfs.map((tf) => {
      const d = drift[tf] || {};
      const psi = d.max_psi;
      const cls = !isNum(psi) ? 'muted' : psi > 0.25 ? 'bad' : psi > 0.1 ? 'warn' : 'ok';
      const label = !isNum(psi) ? '—' : psi > 0.25 ? 'drift' : psi > 0.1 ? 'watch' : 'stable';
      const worst = (d.worst || []).slice(0, 3).map((w) => esc(w[0]) + ' ' + fmtNum(w[1], 2)).join(', ');
      return '<div class="drift-row" data-drift-tf="' + esc(tf) + '"><span class="tf">' + esc(tf) + '</span>' +
        '<span class="badge ' + cls + '">' + label + '</span><span class="psi ' + cls + '">PSI ' + fmtNum(psi, 2) + '</span>' +
        '<span class="muted small">' + fmtInt(d.rows) + ' rows</span><span class="worst small" title="worst features">' + (worst || '') + '</span></div>';
    }).join('');
    return '<div class="card" data-drift="drift"><div class="card-head"><span class="card-title">feature drift</span>' +
      '<span class="muted small">PSI &gt; 0.25 drift, &gt; 0.1 watch</span></div>' + (rows || '<div class="muted">no data yet</div>') + '</div>';
  }

  function miscCard(d) {
    const bits = [];
    const down = [];
    const sup = d.supervisor || {};
    if (sup.up === false) down.push('<div class="err">supervisor DOWN: ' + esc(sup.error || 'not answering') + '</div>');
    else if (isNum(sup.feed_restarts)) bits.push(kv('feed restarts', fmtInt(sup.feed_restarts), sup.feed_restarts ? 'warn' : ''));
    const ing = d.ingress || {};
    if (ing.up === false) down.push('<div class="err">ingress DOWN: ' + esc(ing.error || 'not answering') + '</div>');
    else {
      if (isNum(ing.http_predicts)) bits.push(kv('HTTP predicts', fmtInt(ing.http_predicts)));
      if (isNum(ing.model_calls)) bits.push(kv('model calls', fmtInt(ing.model_calls)));
    }
    const a = d.api || {};
    if (isNum(a.stream_clients)) bits.push(kv('stream clients', fmtInt(a.stream_clients)));
    const served = a.served_models || {};
    const servedTxt = Object.keys(served).sort().map((k) => esc(k) + ' ' + esc(served[k])).join(', ');
    let html = '<div class="card' + (down.length ? ' down' : '') + '"><div class="card-head"><span class="card-title">service</span></div>' + down.join('') + '<div class="kvs">' + bits.join('') + '</div>';
    if (servedTxt) html += '<div class="served small"><span class="k">serving</span> ' + servedTxt + '</div>';
    return html + '</div>';
  }

  async function refreshStatus() {
    const note = $('#health-note');
    let d;
    try {
      d = await api('/v1/status');
    } catch (e) {
      note.textContent = 'status: ' + (e.status ? e.status + ' ' : '') + e.message;
      note.className = 'small bad';
      throw e;
    }
    const now = performance.now();
    note.className = 'muted small';
    note.textContent = 'updated ' + new Date().toISOString().slice(11, 19) + ' UTC \u00B7 every 5 s';
    if (d.environment && d.environment !== state.environment) { state.environment = d.environment; dirty.header = true; }
    const served = d.api && d.api.served_models ? Object.keys(d.api.served_models).length : 0;
    if (served !== state.servedModels) { state.servedModels = served; dirty.header = true; }
    // A list, or {up: false, error} when the actor holding it does not answer.
    const group = (v, render, what) => {
      if (Array.isArray(v)) return v.map(render).join('') || '<div class="muted">no ' + what + '</div>';
      if (v && v.up === false) return downCard('', what, v);
      return '<div class="muted">no ' + what + '</div>';
    };
    let html = '';
    if (d.up === false) html += '<div class="cards">' + downCard('', 'pipeline', d) + '</div>';
    html += '<div class="health-group"><h3>Feeds</h3><div class="cards">' +
      group(d.feeds, (f, i) => feedCard(f, i, now), 'feeds') + '</div></div>';
    html += '<div class="health-group"><h3>Shards</h3><div class="cards">' +
      group(d.shards, shardCard, 'shards') + '</div></div>';
    html += '<div class="health-group"><h3>Sink, drift, service</h3><div class="cards">' + sinkCard(d.sink) + driftCard(d.drift) + miscCard(d) + '</div></div>';
    const staleNames = new Set(Array.isArray(d.feeds) ? d.feeds.map((f, i) => f.name || ('feed ' + i)) : []);
    for (const k of Array.from(feedPrev.keys())) if (!staleNames.has(k)) feedPrev.delete(k);
    $('#health-body').innerHTML = html;
    schedule();
  }

  // ---------------------------------------------------------------- ticker (1 s)

  let lastMsgs = 0;
  let lastTick = performance.now();
  function tick() {
    const now = performance.now();
    const rate = (state.msgs - lastMsgs) / ((now - lastTick) / 1000);
    lastMsgs = state.msgs;
    lastTick = now;
    state.msgRate = state.msgRate ? 0.6 * state.msgRate + 0.4 * rate : rate;
    dirty.header = true;
    if (!ws.live && !ws.sock) renderConn();
    // Without the stream, keep the table roughly current over HTTP (every 15 s).
    if (!ws.live && !state.needAuth && state.latestLoaded && Date.now() - lastLatestLoad > 15000 && !document.hidden) loadLatest();
    if (state.errorKind === '429') showRateLimit();
    schedule();
  }

  // ---------------------------------------------------------------- start

  const statusPoller = poller(refreshStatus, STATUS_EVERY_MS);
  const scoreboardPoller = poller(refreshScoreboard, SCOREBOARD_EVERY_MS);
  const modelsPoller = poller(refreshModels, MODELS_EVERY_MS);

  function start() {
    if (!LWC) {
      chartStatusEl.textContent = 'chart library missing';
    } else {
      makeChart();
    }
    $('#chart-empty').hidden = false;
    renderHeader();
    renderTable();
    loadLatest();
    connect();
    statusPoller.now();
    modelsPoller.now().then(() => scoreboardPoller.now());
    window.setInterval(tick, 1000);
  }

  start();
})();
