/* spikewatch dashboard: plain JavaScript, no build step, no framework.
 *
 * On open: GET /api/status (the exchange and its symbols), then the Server-Sent Events of
 * /api/stream, then /api/bars (one-second candles), /api/signals and /api/alerts (history
 * for the tables and the chart's markers). Live: `status` every second (per symbol:
 * connection, price, trade rate, the forming bar), `signal` for each spike and `alert` for
 * each alert opened or updated (an update replaces its row). The stream is open before the
 * history is read, so nothing falls in between; signals and alerts are de-duplicated by id.
 *
 * The table shows Signals or Alerts (a switch above it; Alerts first when the app has
 * alert rules). A click on an alert moves the chart to its moment. New alerts can ring and
 * raise a browser notification: both off until the user turns them on (the browser asks
 * for the notification permission then, never on its own).
 *
 * A series is an (exchange, symbol) pair, keyed "exchange:SYMBOL" (as signal ids begin):
 * BTCUSDT spot and BTCUSDT futures are two series, and every request names its exchange.
 *
 * The chart is TradingView's lightweight-charts v5 (standalone build, served by the app
 * from static/vendor/ after `make assets`). Without it the page still shows the table and
 * the status, and says how to install the chart.
 *
 * The market view (the landing page when the app watches more than one symbol; "#market"):
 * a leaderboard of the watched symbols from /api/top, re-read every few seconds and soon
 * after each `signal` event, with a 5 min / 1 h switch, a ranking choice and a search
 * (server-side, so a quiet symbol among 2,000 is found too). A row opens that symbol's
 * chart ("#exchange:SYMBOL"); the header's Market link and the browser's Back return.
 * The board's windows, maxima and expiry are the server's (core/leaderboard.py): the page
 * only draws them, so it shows what the API says, after a restart too.
 *
 * The whole market (more than MANY symbols, e.g. `--symbols ALL`): no card and no picker
 * entry per symbol (2,000 of them would bury the chart). The header's search box completes
 * over the watched symbols from /api/symbols (on the server: a symbol listed since the page
 * opened is found too) and opens the one picked ("#exchange:SYMBOL", a new history entry:
 * Back returns); the cards are the chosen symbol's, the pinned ones (a star on the card,
 * remembered in the browser) and the last few opened. Beyond 50 symbols a `status` event
 * lists only those that traded, so the header's total over every symbol comes from the
 * `totals` event that follows it (the server sums it in the same pass).
 *
 * Two links stand between the page and the market: the live stream (page <-> app) and the
 * app's connection to the exchange. The header says "live" only while both are up; while
 * the exchange is not connected, the chart panel says why (the last connection error from
 * /api/status, re-read every few seconds until connected), so an empty chart on a machine
 * without internet is explained rather than silent.
 */
(() => {
  "use strict";

  const MAX_ROWS = 200; // signals kept in the table (all symbols)
  const MAX_MARKERS = 1000; // spike markers kept on the chart
  const BAR_LIMIT = 600; // one-second bars loaded on open (10 minutes)
  const MAX_BARS = 3600; // bars kept on the chart (the server keeps an hour)
  const RECONCILE_MS = 2000; // at most this often, re-read the bars that closed (see below)
  const RETRY_MS = 3000; // reopen a stream the browser gave up on (e.g. after a 503)
  const STATUS_POLL_MS = 2000; // re-read /api/status this often while the exchange is down
  const MAX_ERROR_CHARS = 300; // of the connection error shown (the full text is its title)
  const MAX_ALERTS = 200; // alerts kept in the table (all symbols)
  const FOCUS_S = 90; // a focused alert is shown with this many seconds either side
  const MARKET_POLL_MS = 3000; // re-read the leaderboard this often while it is shown
  const MARKET_NUDGE_MS = 800; // and this soon after a signal (at most once per this)
  const MARKET_ROWS = 100; // leaderboard rows shown (the search reaches the others)
  const SEARCH_DELAY_MS = 200; // typing pauses this long before the search is sent
  // Beyond this many symbols, the whole-market chart view: a search box rather than a
  // select, and cards only for the chosen, pinned and recent symbols (the server's live
  // status, too, lists every symbol up to 50 and only those that traded beyond)
  const MANY = 50;
  const MAX_PINNED = 8; // cards pinned, at most (the oldest pin goes first)
  const MAX_RECENT = 4; // cards of the symbols opened last (besides the pinned ones)
  const FIND_ROWS = 12; // completions shown
  const FIND_FETCH = 100; // matches read to rank them (exact, then prefix, then the rest)
  /** Quote assets, longest first: what a symbol's price and quote volume are counted in. */
  const QUOTES = [
    "FDUSD", "PYUSD", "USDT", "USDC", "BUSD", "TUSD", "USDP", "USDE", "BIDR", "IDRT",
    "DAI", "USD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL", "JPY", "GBP", "AUD", "RUB",
    "UAH", "ZAR", "PLN", "RON", "ARS", "MXN", "COP", "CZK", "XRP", "TRX", "DOGE", "SOL",
  ].sort((a, b) => b.length - a.length);
  const SEVERITY_TONE = { info: 520, warning: 660, critical: 880 }; // Hz of the alert sound
  const STORED = "spikewatch."; // localStorage keys: the sound and notification toggles

  const COLORS = {
    up: "#26a69a",
    down: "#ef5350",
    upVolume: "rgba(38, 166, 154, 0.45)",
    downVolume: "rgba(239, 83, 80, 0.45)",
    text: "#8190a5",
    grid: "#1b222c",
    border: "#232b37",
    panel: "#141922",
    info: "#64b5f6",
    warning: "#f5a623",
    critical: "#ff5252",
  };
  const STREAM_TEXT = {
    connecting: "connecting…",
    live: "live",
    reconnecting: "reconnecting…",
    offline: "offline",
  };
  /** How the exchanges the app serves are named to people (the API's name otherwise). */
  const EXCHANGE_NAMES = {
    binance: "Binance",
    "binance-usdm": "Binance USDⓈ-M futures",
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    symbol: $("symbol"),
    price: $("price"),
    rate: $("rate"),
    stream: $("stream"),
    banner: $("banner"),
    symbols: $("symbols"),
    chart: $("chart"),
    chartNote: $("chart-note"),
    exchangeNote: $("exchange-note"),
    chartTitle: $("chart-title"),
    tbody: document.querySelector("#signals tbody"),
    count: $("signal-count"),
    empty: $("signals-empty"),
    priceUnit: $("price-unit"),
    viewSignals: $("view-signals"),
    viewAlerts: $("view-alerts"),
    signalsView: $("signals-view"),
    alertsView: $("alerts-view"),
    alertBody: document.querySelector("#alerts tbody"),
    alertCount: $("alert-count"),
    alertsEmpty: $("alerts-empty"),
    alertBadge: $("alert-badge"),
    alertOptions: $("alert-options"),
    sound: $("alert-sound"),
    notify: $("alert-notify"),
    focusNote: $("focus-note"),
    toMarket: $("to-market"),
    marketView: $("market-view"),
    symbolView: $("symbol-view"),
    market: document.querySelector("#market tbody"),
    marketBy: $("market-by"),
    marketSearch: $("market-search"),
    marketCount: $("market-count"),
    marketEmpty: $("market-empty"),
    marketBucket: $("market-bucket"),
    windows: [...document.querySelectorAll("#market-view [data-window]")],
    find: $("find"),
    findInput: $("find-input"),
    findList: $("find-list"),
    totals: $("totals"),
    cardsNote: $("cards-note"),
  };

  const state = {
    exchange: null, // the exchange the server serves (/api/status)
    key: null, // the series on the chart, "exchange:SYMBOL"
    symbol: null, // its symbol
    series: new Map(), // key -> {exchange, symbol}, in the server's order
    cards: new Map(), // key -> its status card
    signals: [], // the table's signals, newest first
    signalIds: new Set(),
    liveSignals: new Map(), // key -> Map(id -> signal) pushed since the page opened
    lastEventId: null, // of the last `signal` event, to resume a stream opened anew
    stream: "connecting",
    // The app's connection to the exchange, as the page last heard (/api/status and the
    // stream's `status` events): state is "unknown" while the stream is down.
    link: { state: "unknown", lastError: null, failedAttempts: 0, connectedSince: null },
    trades: null, // trades the app has received from the exchange (all symbols), if known
    everConnected: false,
    ready: false,
    loadToken: 0,
    rendered: Object.create(null), // signal id -> Date.now() when its row entered the DOM
    marked: Object.create(null), // signal id -> Date.now() when its marker went to the chart
    chartLoad: null, // resolves when the chart's series has loaded
    view: "signals", // what the table shows: "signals" or "alerts"
    alertRules: false, // the app has alert rules (/api/status "alerts")
    alerts: [], // the alerts table's alerts (latest fold of each), newest first
    alertIds: new Map(), // id -> alert
    expanded: new Set(), // ids of alerts whose details are open
    focused: null, // id of the alert the chart was moved to
    unseen: 0, // alerts opened while the table showed signals
    sound: false, // ring when an alert opens
    notify: false, // a browser notification when an alert opens
    sounds: 0, // rung so far (for tests)
    notifications: [], // ids of the alerts notified so far (for tests)
    page: "symbol", // what the page shows: "market" (the leaderboard) or "symbol" (a chart)
    many: false, // more than MANY symbols: the whole-market chart view (see the top)
    info: new Map(), // key -> the latest state heard of it (/api/status, `status` events)
    pinned: [], // keys of the pinned cards, oldest first (many symbols only)
    recent: [], // keys of the symbols opened last, latest first (many symbols only)
    totals: null, // the latest `totals` event (every watched symbol), if the server sends them
    find: { token: 0, reads: 0, options: [], active: -1, timer: null },
    market: {
      window: "5m",
      by: "signals",
      q: "",
      rows: [], // the leaderboard as last read
      reads: 0, // answers drawn so far (for tests)
      token: 0, // of the latest request: an older answer is dropped
      timer: null,
      nudged: 0, // Date.now() of the last read caused by a signal
      pressed: 0, // Date.now() when a pointer went down on the board: a redraw waits
      held: null, // the answer that waits for the pointer to come up
    },
  };

  // -- formatting ------------------------------------------------------------------------

  const formats = new Map();
  function number(value, min, max) {
    const key = `${min}:${max}`;
    let format = formats.get(key);
    if (!format) {
      format = new Intl.NumberFormat("en-US", {
        minimumFractionDigits: min,
        maximumFractionDigits: max,
      });
      formats.set(key, format);
    }
    return format.format(value);
  }
  function priceDigits(price) {
    if (price >= 1000) return 2;
    if (price >= 1) return 4;
    return 8;
  }
  const fmtPrice = (p) => (p == null ? "—" : number(p, priceDigits(p), priceDigits(p)));
  const fmtVolume = (v) => number(v, 4, 8);
  const fmtQuote = (v) => (v >= 1000 ? number(v, 0, 0) : number(v, 2, 2));
  const fmtRatio = (r) => `${number(r, 1, 1)}×`;
  const fmtTime = (us) => new Date(Math.floor(us / 1000)).toISOString().slice(11, 23);
  /** US dollars, short: $950, $617.3k, $1.23M (null: unknown). */
  function fmtUsd(v) {
    if (v == null) return "—";
    for (const [size, unit, digits] of [[1e9, "B", 2], [1e6, "M", 2], [1e3, "k", 1]]) {
      if (v >= size) return `$${number(v / size, digits, digits)}${unit}`;
    }
    return `$${number(v, 0, 0)}`;
  }
  const fmtUsdExact = (v) => (v == null ? "unknown" : `${number(v, 2, 2)} USD`);
  /** A symbol's base and quote assets ("BTCUSDT" -> BTC, USDT); null when not known. */
  function assets(symbol) {
    for (const quote of QUOTES) {
      if (symbol.length > quote.length && symbol.endsWith(quote)) {
        return { base: symbol.slice(0, -quote.length), quote };
      }
    }
    return null;
  }
  /** A value and its unit, the unit muted: "61,617.84 USDT". */
  function withUnit(parent, text, unit) {
    parent.textContent = text;
    if (unit) {
      const span = document.createElement("span");
      span.className = "unit";
      span.textContent = ` ${unit}`;
      parent.append(span);
    }
    return parent;
  }
  const seriesKey = (exchange, symbol) => `${exchange}:${symbol}`;
  const seriesName = (exchange, symbol) => `${symbol} · ${exchange}`;
  /** The query string of one series' requests. */
  const seriesQuery = (exchange, symbol) =>
    `symbol=${encodeURIComponent(symbol)}&exchange=${encodeURIComponent(exchange)}`;

  // -- HTTP ------------------------------------------------------------------------------

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // -- the chart -------------------------------------------------------------------------

  function createChartView(container) {
    const LWC = window.LightweightCharts;
    if (!LWC || typeof LWC.createChart !== "function") return null;
    const api = LWC.createChart(container, {
      autoSize: true,
      layout: {
        background: { type: LWC.ColorType.Solid, color: COLORS.panel },
        textColor: COLORS.text,
        fontFamily: getComputedStyle(document.body).fontFamily,
      },
      grid: { vertLines: { color: COLORS.grid }, horzLines: { color: COLORS.grid } },
      rightPriceScale: { borderColor: COLORS.border, scaleMargins: { top: 0.12, bottom: 0.3 } },
      timeScale: { borderColor: COLORS.border, timeVisible: true, secondsVisible: true, rightOffset: 6 },
      crosshair: { mode: LWC.CrosshairMode.Normal },
    });
    const candles = api.addSeries(LWC.CandlestickSeries, {
      upColor: COLORS.up,
      downColor: COLORS.down,
      wickUpColor: COLORS.up,
      wickDownColor: COLORS.down,
      borderVisible: false,
    });
    const volume = api.addSeries(LWC.HistogramSeries, {
      priceScaleId: "volume",
      priceFormat: { type: "volume" },
      lastValueVisible: false,
      priceLineVisible: false,
    });
    volume.priceScale().applyOptions({ scaleMargins: { top: 0.76, bottom: 0 } });
    const markerPlugin = LWC.createSeriesMarkers(candles, []);

    let bars = new Map(); // time (s) -> bar, as shown
    let lastTime = null;
    let loaded = false;
    let pending = []; // live bars that came while the history was loading
    let signals = new Map(); // id -> signal of the chart's symbol
    let groups = new Map(); // marker id -> ids of the signals it stands for
    let alerts = new Map(); // id -> alert of the chart's symbol (a marker each)
    let focused = null; // id of the alert the chart was moved to (a larger marker)
    let alertMarks = []; // ids of the alerts with a marker now
    let markerFlush = false;

    const candle = (b) => ({ time: b.time, open: b.open, high: b.high, low: b.low, close: b.close });
    const bin = (b) => ({
      time: b.time,
      value: b.volume,
      color: b.close >= b.open ? COLORS.upVolume : COLORS.downVolume,
    });
    const same = (a, b) =>
      a.open === b.open && a.high === b.high && a.low === b.low && a.close === b.close &&
      a.volume === b.volume;

    function redraw() {
      const sorted = [...bars.values()].sort((a, b) => a.time - b.time).slice(-MAX_BARS);
      bars = new Map(sorted.map((b) => [b.time, b]));
      candles.setData(sorted.map(candle));
      volume.setData(sorted.map(bin));
      lastTime = sorted.length ? sorted[sorted.length - 1].time : null;
      container.dataset.bars = String(bars.size);
    }

    function write(b) {
      const historical = lastTime !== null && b.time < lastTime;
      candles.update(candle(b), historical);
      volume.update(bin(b), historical);
      if (lastTime === null || b.time > lastTime) lastTime = b.time;
      container.dataset.bars = String(bars.size);
    }

    /** Put bars (oldest first) on the chart. */
    function merge(list) {
      let rebuild = false;
      let advanced = false;
      const changed = [];
      for (const b of list) {
        const old = bars.get(b.time);
        if (old && same(old, b)) continue;
        if (!old && lastTime !== null && b.time < lastTime) rebuild = true;
        if (lastTime === null || b.time > lastTime) advanced = true;
        bars.set(b.time, b);
        changed.push(b);
      }
      if (rebuild || bars.size > MAX_BARS + 600) redraw();
      else changed.forEach(write);
      if (advanced) scheduleMarkers(); // markers snapped to the old last bar move on
    }

    function firstTime() {
      let first = null;
      for (const time of bars.keys()) if (first === null || time < first) first = time;
      return first;
    }

    function scheduleMarkers() {
      if (markerFlush) return;
      markerFlush = true;
      requestAnimationFrame(flushMarkers);
    }

    function flushMarkers() {
      markerFlush = false;
      const first = firstTime();
      const list = [...signals.values()]
        .filter((s) => first === null || Math.floor(s.time_us / 1e6) >= first)
        .sort((a, b) => a.time_us - b.time_us || (a.id < b.id ? -1 : 1))
        .slice(-MAX_MARKERS);
      // One marker per bar and side (a burst of spikes in one second is one arrow with a
      // count), or bursts would stack into columns of arrows.
      groups = new Map();
      const markers = [];
      for (const s of list) {
        const time = Math.floor(s.time_us / 1e6);
        const key = `${time}:${s.side}`;
        const ids = groups.get(key);
        if (ids) {
          ids.push(s.id);
          continue;
        }
        groups.set(key, [s.id]);
        const buy = s.side === "buy";
        markers.push({
          id: key,
          time,
          position: buy ? "belowBar" : "aboveBar",
          shape: buy ? "arrowUp" : "arrowDown",
          color: buy ? COLORS.up : COLORS.down,
        });
      }
      for (const marker of markers) {
        const count = groups.get(marker.id).length;
        if (count > 1) {
          marker.text = String(count);
          marker.size = count >= 5 ? 1.6 : 1.3;
        }
      }
      // Alerts: a circle above the bar in the severity's colour, named by its rule.
      alertMarks = [];
      for (const a of alerts.values()) {
        const time = Math.floor(a.time_us / 1e6);
        if (first === null || time < first) continue;
        alertMarks.push(a.id);
        markers.push({
          id: `alert:${a.id}`,
          time,
          position: "aboveBar",
          shape: "circle",
          color: COLORS[a.severity] || COLORS.warning,
          text: a.rule,
          size: a.id === focused ? 2 : 1,
        });
      }
      markers.sort((a, b) => a.time - b.time);
      markerPlugin.setMarkers(markers);
      const now = Date.now();
      for (const s of list) if (!(s.id in state.marked)) state.marked[s.id] = now;
      container.dataset.markers = String(list.length);
    }

    return {
      /** Forget everything shown (another symbol is coming). */
      reset() {
        loaded = false;
        pending = [];
        bars = new Map();
        signals = new Map();
        alerts = new Map();
        focused = null;
        redraw();
        flushMarkers();
      },
      /** The history of the chart's symbol; then the live bars that came meanwhile. */
      load(list, precisionFrom) {
        bars = new Map(list.map((b) => [b.time, b]));
        const last = list.length ? list[list.length - 1].close : precisionFrom;
        if (last != null) {
          const digits = priceDigits(last);
          candles.applyOptions({
            priceFormat: { type: "price", precision: digits, minMove: 10 ** -digits },
          });
        }
        redraw();
        loaded = true;
        merge(pending);
        pending = [];
        scheduleMarkers();
      },
      /** A live (forming) bar. */
      live(bar) {
        if (loaded) merge([bar]);
        else pending.push(bar);
      },
      /** Bars re-read from the server: the final values of those that closed. */
      merge(list) {
        if (loaded) merge(list);
      },
      lastTime: () => lastTime,
      /**
       * A live spike. Its second may not have a bar yet (the `status` event comes up to a
       * second later): give it a provisional one, the spike trade alone, so the marker
       * sits on its own bar; the next status event or re-read puts the real values in.
       */
      addLive(s) {
        const time = Math.floor(s.time_us / 1e6);
        if (loaded && (lastTime === null || time > lastTime)) {
          const p = s.price;
          merge([{ time, open: p, high: p, low: p, close: p, volume: s.volume, trades: 1 }]);
        }
        this.addSignals([s]);
      },
      /** Spike markers (signals of the chart's symbol). */
      addSignals(list) {
        for (const s of list) signals.set(s.id, s);
        if (signals.size > MAX_MARKERS * 2) {
          const keep = [...signals.values()].sort((a, b) => a.time_us - b.time_us).slice(-MAX_MARKERS);
          signals = new Map(keep.map((s) => [s.id, s]));
        }
        scheduleMarkers();
      },
      /** Alerts of the chart's symbol (their latest folds). */
      addAlerts(list) {
        for (const a of list) alerts.set(a.id, a);
        scheduleMarkers();
      },
      firstTime,
      /**
       * Centre the moment ``time`` (s) at the present zoom (FOCUS_S bars either side when
       * there is none), and mark ``alertId`` larger. By bar index rather than by time:
       * seconds without trades have no bar.
       */
      focus(time, alertId) {
        focused = alertId;
        const times = [...bars.keys()].sort((a, b) => a - b);
        if (times.length) {
          let at = times.findIndex((t) => t >= time);
          if (at < 0) at = times.length - 1;
          const shown = api.timeScale().getVisibleLogicalRange();
          const half = shown ? Math.max(10, (shown.to - shown.from) / 2) : FOCUS_S;
          api.timeScale().setVisibleLogicalRange({ from: at - half, to: at + half });
        }
        scheduleMarkers();
      },
      visibleRange: () => api.timeScale().getVisibleRange(),
      alertMarkerIds: () => alertMarks.slice(),
      barCount: () => bars.size,
      // What the chart library itself holds, for tests: the signal ids behind its markers.
      markerIds: () => markerPlugin.markers().flatMap((m) => groups.get(m.id) || []),
    };
  }

  const chart = createChartView(el.chart);
  if (!chart) {
    el.chart.hidden = true;
    el.chartNote.hidden = false;
  }

  // -- per-symbol status -----------------------------------------------------------------

  function card(exchange, symbol) {
    const key = seriesKey(exchange, symbol);
    let li = state.cards.get(key);
    if (li) return li;
    li = document.createElement("li");
    li.dataset.key = key;
    li.dataset.exchange = exchange;
    li.dataset.symbol = symbol;
    li.dataset.connection = "unknown";
    li.title = `Show ${seriesName(exchange, symbol)} on the chart`;
    for (const name of ["name", "conn", "last", "stats"]) {
      const span = document.createElement("span");
      span.className = name;
      li.append(span);
    }
    const venue = document.createElement("span");
    venue.className = "venue";
    venue.textContent = exchange;
    li.querySelector(".name").append(`${symbol} `, venue);
    if (state.many) {
      // many symbols: a card stays while pinned; a click on the card opens it (Back returns)
      const pin = document.createElement("button");
      pin.type = "button";
      pin.className = "pin";
      pin.addEventListener("click", (event) => {
        event.stopPropagation(); // not a click on the card
        togglePin(key);
      });
      li.prepend(pin);
      showPin(li);
      li.addEventListener("click", () => openSymbol(key));
    } else {
      li.addEventListener("click", () => selectSeries(key));
    }
    el.symbols.append(li);
    state.cards.set(key, li);
    const known = state.info.get(key);
    if (known) showCard(li, symbol, known);
    return li;
  }

  /** Show one series' state: from /api/status (no rate) or a `status` event. With many
   * symbols only a card shown is drawn; the state is kept for a card shown later. */
  function showSymbol(exchange, symbol, info) {
    const key = seriesKey(exchange, symbol);
    state.info.set(key, info);
    const li = state.many ? state.cards.get(key) : card(exchange, symbol);
    if (li) showCard(li, symbol, info);
    if (key === state.key) showQuote(info);
  }

  function showCard(li, symbol, info) {
    if (info.connection == null) return;
    li.dataset.connection = info.connection;
    li.querySelector(".conn").textContent = info.connection;
    const unit = info.last_price == null ? null : (assets(symbol) || {}).quote;
    withUnit(li.querySelector(".last"), fmtPrice(info.last_price), unit);
    const rate = info.trades_per_s == null ? "" : `${number(info.trades_per_s, 1, 1)} trades/s · `;
    li.querySelector(".stats").textContent = `${rate}${number(info.signals || 0, 0, 0)} signals`;
  }

  // -- the whole market: cards for the chosen, pinned and recent symbols -----------------

  function showPin(li) {
    const pinned = state.pinned.includes(li.dataset.key);
    const button = li.querySelector(".pin");
    button.textContent = pinned ? "★" : "☆";
    button.setAttribute("aria-pressed", String(pinned));
    button.setAttribute("aria-label", `${pinned ? "Unpin" : "Pin"} ${li.dataset.symbol}`);
    button.title = pinned ? "Unpin: the card goes when no longer recent" : "Pin this card";
    li.classList.toggle("pinned", pinned);
  }

  function storeKeys(name, keys) {
    try {
      localStorage.setItem(STORED + name, JSON.stringify(keys));
    } catch (err) {
      // private mode: the cards last as long as the page
    }
  }
  function storedKeys(name) {
    try {
      const keys = JSON.parse(localStorage.getItem(STORED + name) || "[]");
      return Array.isArray(keys) ? keys.filter((k) => typeof k === "string").slice(0, MAX_PINNED) : [];
    } catch (err) {
      return [];
    }
  }

  function togglePin(key) {
    const at = state.pinned.indexOf(key);
    if (at >= 0) state.pinned.splice(at, 1);
    else state.pinned.push(key);
    while (state.pinned.length > MAX_PINNED) state.pinned.shift();
    storeKeys("pinned", state.pinned);
    drawCards();
  }

  /** The cards with many symbols: the chosen series, then the pinned, then the recent. */
  function drawCards() {
    if (!state.many) return;
    const wanted = [];
    for (const key of [state.key, ...state.pinned, ...state.recent]) {
      if (key && state.series.has(key) && !wanted.includes(key)) wanted.push(key);
    }
    for (const [key, li] of state.cards) {
      if (!wanted.includes(key)) {
        li.remove();
        state.cards.delete(key);
      }
    }
    for (const key of wanted) {
      const { exchange, symbol } = state.series.get(key);
      const li = card(exchange, symbol);
      li.classList.toggle("selected", key === state.key);
      showPin(li);
      el.symbols.append(li); // in this order
    }
    const total = state.totals ? state.totals.symbols : state.series.size;
    el.cardsNote.textContent =
      `${number(total, 0, 0)} symbols watched: the cards are the one on the chart, ` +
      "the pinned (☆) and the last opened; find any other above, or on the Market board.";
    el.cardsNote.hidden = false;
  }

  /** With many symbols, the series a symbol opened adds to the recent cards. */
  function noteRecent(key) {
    if (!state.many) return;
    state.recent = [key, ...state.recent.filter((k) => k !== key)].slice(0, MAX_RECENT + 1);
    storeKeys("recent", state.recent);
  }

  /** A series not in the page's list (listed since it opened): ask the server whether it
   * is watched, and add it. Resolves to whether it is. */
  async function learnSeries(key) {
    if (state.series.has(key)) return true;
    const at = key.indexOf(":");
    if (at < 1) return false;
    const exchange = key.slice(0, at);
    const symbol = key.slice(at + 1).toUpperCase();
    if (!/^[A-Z0-9]{1,30}$/.test(symbol)) return false;
    try {
      const query = new URLSearchParams({ q: symbol, exchange, limit: String(FIND_FETCH) });
      const body = await getJSON(`/api/symbols?${query}`);
      const found = body.symbols.find((r) => r.symbol === symbol && r.exchange === exchange);
      if (!found) return false;
      state.series.set(seriesKey(exchange, symbol), { exchange, symbol });
      state.info.set(seriesKey(exchange, symbol), found);
      return true;
    } catch (err) {
      return false;
    }
  }

  // -- the whole market: the symbol finder (a combobox over /api/symbols) ---------------

  /** Matches ranked as a trader types: the exact symbol, then those it begins, then the
   * rest (each by symbol, as the server sends them). */
  function rankMatches(rows, q) {
    const place = (r) => (r.symbol === q ? 0 : r.symbol.startsWith(q) ? 1 : 2);
    return rows
      .map((r, i) => [place(r), i, r])
      .sort((a, b) => a[0] - b[0] || a[1] - b[1])
      .map((x) => x[2]);
  }

  function findOption(r, index) {
    const li = document.createElement("li");
    li.id = `find-${index}`;
    li.setAttribute("role", "option");
    li.setAttribute("aria-selected", "false");
    li.dataset.key = seriesKey(r.exchange, r.symbol);
    li.dataset.symbol = r.symbol;
    const name = document.createElement("span");
    name.className = "name";
    const venue = document.createElement("span");
    venue.className = "venue";
    venue.textContent = r.exchange;
    name.append(`${r.symbol} `, venue);
    const quote = r.quote || (assets(r.symbol) || {}).quote;
    const price = withUnit(document.createElement("span"), fmtPrice(r.last_price), r.last_price == null ? null : quote);
    price.className = "last";
    const stats = document.createElement("span");
    stats.className = "stats";
    stats.textContent = r.signals == null ? "" : `${number(r.signals, 0, 0)} signals`;
    li.append(name, price, stats);
    // mousedown, not click: the input's blur (which closes the list) comes first otherwise
    li.addEventListener("mousedown", (event) => {
      event.preventDefault();
      pick(index);
    });
    return li;
  }

  function closeFind() {
    const f = state.find;
    f.token += 1; // an answer on its way is not drawn
    f.options = [];
    f.active = -1;
    el.findList.hidden = true;
    el.findList.replaceChildren();
    el.findInput.setAttribute("aria-expanded", "false");
    el.findInput.removeAttribute("aria-activedescendant");
  }

  function setActive(index) {
    const f = state.find;
    if (!f.options.length) return;
    f.active = (index + f.options.length) % f.options.length;
    [...el.findList.children].forEach((li, i) => {
      li.setAttribute("aria-selected", String(i === f.active));
      li.classList.toggle("active", i === f.active);
    });
    const li = el.findList.children[f.active];
    el.findInput.setAttribute("aria-activedescendant", li.id);
    li.scrollIntoView({ block: "nearest" });
  }

  /** Draw the completions ``rows`` (ranked) for ``q``: ``total`` matches in all, or
   * null while the server has not answered. The option that was active stays so. */
  function drawFind(rows, q, total) {
    const f = state.find;
    const was = f.options[f.active];
    f.options = rows.map((r) => seriesKey(r.exchange, r.symbol));
    f.active = -1;
    const items = rows.map(findOption);
    const note = (text) => {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = text;
      items.push(li);
    };
    if (!rows.length) note(total === null ? "Searching…" : `No watched symbol contains “${q}”.`);
    else if (total !== null && total > rows.length) {
      note(`${number(total - rows.length, 0, 0)} more match: type more of it.`);
    }
    el.findList.replaceChildren(...items);
    el.findList.hidden = false;
    el.findInput.setAttribute("aria-expanded", "true");
    el.findInput.removeAttribute("aria-activedescendant");
    if (rows.length) setActive(Math.max(0, f.options.indexOf(was))); // Enter opens the best
  }

  /**
   * The completions for what is typed: at once from the symbols the page knows (their
   * last state heard), then from /api/symbols (the server's list: a symbol listed since
   * the page opened too, with fresh figures). A newer keystroke wins.
   */
  async function readFind() {
    const f = state.find;
    const q = el.findInput.value.replace(/[^A-Za-z0-9]/g, "").slice(0, 30).toUpperCase();
    if (!q) {
      closeFind();
      return;
    }
    const token = ++f.token;
    const known = [];
    for (const [key, { exchange, symbol }] of state.series) {
      if (exchange === state.exchange && symbol.includes(q)) {
        known.push({ exchange, symbol, ...(state.info.get(key) || {}) });
      }
    }
    known.sort((a, b) => (a.symbol < b.symbol ? -1 : a.symbol > b.symbol ? 1 : 0));
    drawFind(rankMatches(known, q).slice(0, FIND_ROWS), q, null);
    const query = new URLSearchParams({ q, exchange: state.exchange, limit: String(FIND_FETCH) });
    let body;
    try {
      body = await getJSON(`/api/symbols?${query}`);
    } catch (err) {
      return; // the stream's pill shows an outage of the app; the next keystroke tries again
    }
    if (token !== f.token) return;
    const rows = rankMatches(body.symbols, q).slice(0, FIND_ROWS);
    for (const r of rows) {
      const key = seriesKey(r.exchange, r.symbol);
      if (!state.series.has(key)) state.series.set(key, { exchange: r.exchange, symbol: r.symbol });
      if (!state.info.has(key)) state.info.set(key, r);
    }
    drawFind(rows, q, body.total);
    f.reads += 1;
  }

  /** Open the option at ``index`` (the active one, or the best match). */
  function pick(index) {
    const key = state.find.options[index];
    if (!key) return;
    el.findInput.value = "";
    closeFind();
    el.findInput.blur();
    openSymbol(key);
  }

  function setUpFind() {
    el.find.hidden = false;
    el.symbol.parentElement.hidden = true; // the select would list 2,000 symbols
    el.findInput.addEventListener("input", () => {
      clearTimeout(state.find.timer);
      state.find.timer = setTimeout(readFind, SEARCH_DELAY_MS);
    });
    el.findInput.addEventListener("focus", () => {
      if (el.findInput.value) readFind();
    });
    el.findInput.addEventListener("blur", () => setTimeout(closeFind, 0));
    el.findInput.addEventListener("keydown", (event) => {
      const f = state.find;
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        setActive(f.active + (event.key === "ArrowDown" ? 1 : -1));
      } else if (event.key === "Enter") {
        event.preventDefault();
        if (f.options.length) {
          pick(Math.max(0, f.active));
        } else {
          // typed faster than the completion came: read it, then open the best match
          clearTimeout(f.timer);
          readFind().then(() => pick(0));
        }
      } else if (event.key === "Escape") {
        el.findInput.value = "";
        closeFind();
      }
    });
  }

  let shownPrice = null;
  function showQuote(info) {
    const price = info.last_price;
    el.price.textContent = fmtPrice(price);
    el.priceUnit.textContent = price == null ? "" : (assets(state.symbol) || {}).quote || "";
    if (price != null && shownPrice != null && price !== shownPrice) {
      el.price.className = `price ${price > shownPrice ? "up" : "down"}`;
    }
    shownPrice = price;
    el.rate.textContent =
      info.trades_per_s == null ? "" : `${number(info.trades_per_s, 1, 1)} trades/s`;
    const name = seriesName(state.series.get(state.key).exchange, state.symbol);
    document.title = price == null ? "spikewatch" : `${fmtPrice(price)} ${name} · spikewatch`;
  }

  // -- the signals table -----------------------------------------------------------------

  const newer = (a, b) => a.time_us > b.time_us || (a.time_us === b.time_us && a.id > b.id);

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.append(td);
    return td;
  }

  function row(s, fresh) {
    const tr = document.createElement("tr");
    tr.dataset.id = s.id;
    tr.dataset.exchange = s.exchange;
    tr.dataset.symbol = s.symbol;
    tr.dataset.time = String(s.time_us);
    tr.dataset.side = s.side;
    if (fresh) tr.className = "fresh";
    // the milliseconds apart: a phone's narrow table leaves them out
    const time = fmtTime(s.time_us);
    const ms = document.createElement("span");
    ms.className = "ms";
    ms.textContent = time.slice(8);
    const when = cell(tr, time.slice(0, 8), "time");
    when.append(ms);
    when.title = `${s.timestamp} · trade ${s.trade_id}`;
    const venue = document.createElement("span");
    venue.className = "venue";
    venue.textContent = `· ${s.exchange}`;
    cell(tr, `${s.symbol} `).append(venue);
    const side = document.createElement("span");
    side.className = `side ${s.side}`;
    side.textContent = s.side;
    cell(tr, "").append(side);
    // quantities with their asset; the price's (the quote asset) is in its title: the
    // table is dense, and a price is read in its quote asset anyway
    const units = assets(s.symbol) || {};
    cell(tr, fmtPrice(s.price), "num fill").title = units.quote
      ? `${fmtPrice(s.price)} ${units.quote} per ${units.base}`
      : "";
    withUnit(cell(tr, "", "num"), fmtVolume(s.volume), units.base);
    const mean = `mean of the last ${s.window} trades: ${fmtVolume(s.average_volume)}`;
    cell(tr, s.ratio == null ? "—" : fmtRatio(s.ratio), "num").title =
      s.average_volume == null ? "" : `${mean}${units.base ? ` ${units.base}` : ""}`;
    withUnit(cell(tr, "", "num"), fmtQuote(s.quote_volume), units.quote);
    return tr;
  }

  /** Add signals to the table (newest first, each once, at most MAX_ROWS). */
  function addToTable(list, fresh) {
    for (const s of list) {
      if (state.signalIds.has(s.id)) continue;
      let at = 0;
      while (at < state.signals.length && newer(state.signals[at], s)) at += 1;
      if (at >= MAX_ROWS) continue;
      state.signals.splice(at, 0, s);
      state.signalIds.add(s.id);
      el.tbody.insertBefore(row(s, fresh), el.tbody.children[at] || null);
      state.rendered[s.id] = Date.now();
      while (state.signals.length > MAX_ROWS) {
        const gone = state.signals.pop();
        state.signalIds.delete(gone.id);
        delete state.rendered[gone.id];
        el.tbody.lastElementChild.remove();
      }
    }
    el.empty.hidden = state.signals.length > 0;
    el.count.textContent = state.signals.length
      ? `latest ${state.signals.length}${state.signals.length >= MAX_ROWS ? " (max)" : ""}`
      : "";
  }

  function onSignal(s) {
    const key = seriesKey(s.exchange, s.symbol);
    let mine = state.liveSignals.get(key);
    if (!mine) state.liveSignals.set(key, (mine = new Map()));
    mine.set(s.id, s);
    if (mine.size > MAX_MARKERS) mine.delete(mine.keys().next().value);
    addToTable([s], true);
    if (chart && key === state.key) chart.addLive(s);
    if (state.page === "market") nudgeMarket();
  }

  // -- the alerts table ------------------------------------------------------------------

  /** Details of an alert: its summary, what folded into it, where it was delivered. */
  function details(a) {
    const parts = [a.summary];
    const span =
      a.signals > 1
        ? `${a.signals} signals from ${fmtTime(a.time_us).slice(0, 8)} to ` +
          `${fmtTime(a.last_time_us).slice(0, 8)} UTC, together ${fmtUsd(a.usd_total)} ` +
          `(${fmtUsdExact(a.usd_total)})`
        : `1 signal, ${fmtUsdExact(a.usd_value)}`;
    parts.push(span);
    parts.push(`detectors: ${a.detectors.join(", ")}`);
    const sent = Object.entries(a.deliveries || {});
    if (sent.length) parts.push(`delivery: ${sent.map(([d, st]) => `${d} ${st}`).join(", ")}`);
    parts.push(`severity ${a.severity} · ${a.id}`);
    return parts;
  }

  function detailRow(a) {
    const tr = document.createElement("tr");
    tr.className = "detail";
    tr.dataset.for = a.id;
    const td = document.createElement("td");
    td.colSpan = 7;
    const [summary, ...rest] = details(a);
    const head = document.createElement("div");
    head.className = "summary";
    head.textContent = summary;
    const more = document.createElement("div");
    more.className = "muted";
    more.textContent = rest.join(" · ");
    td.append(head, more);
    tr.append(td);
    return tr;
  }

  function alertRow(a, fresh) {
    const tr = document.createElement("tr");
    tr.className = `alert sev-${a.severity}${fresh ? " fresh" : ""}`;
    if (a.id === state.focused) tr.classList.add("focused");
    tr.dataset.id = a.id;
    tr.dataset.exchange = a.exchange;
    tr.dataset.symbol = a.symbol;
    tr.dataset.time = String(a.time_us);
    tr.dataset.side = a.side;
    tr.dataset.severity = a.severity;
    tr.dataset.signals = String(a.signals);
    tr.tabIndex = 0;
    tr.title = `${a.summary}\nClick: show this moment on the chart`;
    const units = assets(a.symbol) || {};
    // to the second (the table is dense); the exact time is the cell's title
    cell(tr, fmtTime(a.time_us).slice(0, 8), "time").title = a.timestamp;
    // the exchange is the one served (the header names it): in the title, for room
    cell(tr, a.symbol).title = `${a.symbol} on ${a.exchange}`;
    const rule = cell(tr, "", "rule");
    const dot = document.createElement("span");
    dot.className = "sev";
    dot.title = `severity: ${a.severity}`;
    rule.append(dot, a.rule);
    const side = document.createElement("span");
    side.className = `side ${a.side}`;
    side.textContent = a.side;
    cell(tr, "").append(side);
    const value = cell(tr, fmtUsd(a.usd_value), "num fill value");
    value.title = `first signal: ${fmtUsdExact(a.usd_value)}`;
    withUnit(cell(tr, "", "num"), fmtPrice(a.price), units.quote);
    const count = cell(tr, "", "num count");
    if (a.signals > 1) {
      const open = state.expanded.has(a.id);
      const button = document.createElement("button");
      button.type = "button";
      button.className = "expand";
      button.setAttribute("aria-expanded", String(open));
      button.title = open ? "Hide the details" : "Show the summary of its signals";
      button.textContent = `${a.signals} ${open ? "▾" : "▸"}`;
      button.addEventListener("click", (event) => {
        event.stopPropagation(); // not a click on the row (which moves the chart)
        toggleDetails(a.id);
      });
      count.append(button);
    } else {
      count.textContent = "1";
    }
    tr.addEventListener("click", () => focusAlert(state.alertIds.get(a.id)));
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter") focusAlert(state.alertIds.get(a.id));
    });
    return tr;
  }

  const alertTr = (id) => el.alertBody.querySelector(`tr.alert[data-id="${CSS.escape(id)}"]`);

  /** (Re)draw one alert's row, and its details under it when they are open. */
  function renderAlert(a, fresh) {
    const old = alertTr(a.id);
    const tr = alertRow(a, fresh);
    if (old) {
      const detail = old.nextElementSibling;
      if (detail && detail.classList.contains("detail")) detail.remove();
      old.replaceWith(tr);
    }
    if (state.expanded.has(a.id) && a.signals > 1) tr.after(detailRow(a));
    return tr;
  }

  function toggleDetails(id) {
    if (state.expanded.has(id)) state.expanded.delete(id);
    else state.expanded.add(id);
    renderAlert(state.alertIds.get(id), false);
  }

  /**
   * Add alerts to the table, newest first, at most MAX_ALERTS; an alert already there is
   * replaced by the newer fold (more signals) and keeps its place (its time is its first
   * signal's). Returns the alerts that were new or changed.
   */
  function addAlerts(list, fresh) {
    const changed = [];
    for (const a of list) {
      const old = state.alertIds.get(a.id);
      if (old) {
        // never an older fold over a newer one; the same fold again only for its
        // delivery states (a page read anew; the stream's events have none)
        const older =
          a.signals < old.signals ||
          (a.signals === old.signals && a.last_time_us < old.last_time_us);
        const same = a.signals === old.signals && a.last_time_us === old.last_time_us;
        if (older || (same && !a.deliveries)) continue;
        const merged = { ...a, deliveries: a.deliveries || old.deliveries };
        state.alerts[state.alerts.indexOf(old)] = merged;
        state.alertIds.set(a.id, merged);
        renderAlert(merged, fresh);
        changed.push(merged);
        continue;
      }
      let at = 0;
      while (at < state.alerts.length && newer(state.alerts[at], a)) at += 1;
      if (at >= MAX_ALERTS) continue;
      state.alerts.splice(at, 0, a);
      state.alertIds.set(a.id, a);
      const next = state.alerts[at + 1];
      el.alertBody.insertBefore(alertRow(a, fresh), next ? alertTr(next.id) : null);
      if (state.expanded.has(a.id)) renderAlert(a, false);
      changed.push(a);
      while (state.alerts.length > MAX_ALERTS) {
        const gone = state.alerts.pop();
        state.alertIds.delete(gone.id);
        state.expanded.delete(gone.id);
        const tr = alertTr(gone.id);
        const detail = tr && tr.nextElementSibling;
        if (detail && detail.classList.contains("detail")) detail.remove();
        if (tr) tr.remove();
      }
    }
    el.alertsEmpty.hidden = state.alerts.length > 0;
    el.alertCount.textContent = state.alerts.length
      ? `latest ${state.alerts.length}${state.alerts.length >= MAX_ALERTS ? " (max)" : ""}`
      : "";
    return changed;
  }

  /** Alerts of one series for the chart (those of other series only go to the table). */
  function alertsToChart(list) {
    if (!chart) return;
    const mine = list.filter((a) => seriesKey(a.exchange, a.symbol) === state.key);
    if (mine.length) chart.addAlerts(mine);
  }

  function onAlert(event) {
    const a = event.alert;
    addAlerts([a], true);
    alertsToChart([a]);
    if (!event.opened) return;
    if (state.view !== "alerts") {
      state.unseen += 1;
      el.alertBadge.textContent = String(state.unseen);
      el.alertBadge.hidden = false;
    }
    ring(a);
    notifyOf(a);
  }

  /** Read the latest alerts (on open, and after the stream was down: alerts missed while
   * it was are not replayed by the stream). */
  async function loadAlerts() {
    const body = await getJSON(
      `/api/alerts?exchange=${encodeURIComponent(state.exchange)}&limit=${MAX_ALERTS}`,
    );
    if (!body.enabled) {
      el.alertsEmpty.textContent = `${body.note.charAt(0).toUpperCase()}${body.note.slice(1)}.`;
      el.alertsEmpty.dataset.kind = "disabled";
    }
    addAlerts(body.alerts, false);
    alertsToChart(body.alerts);
  }

  /** Move the chart to an alert's moment (its series first, when another one is shown). */
  async function focusAlert(a) {
    if (!a) return;
    state.focused = a.id;
    for (const tr of el.alertBody.querySelectorAll("tr.focused")) tr.classList.remove("focused");
    const tr = alertTr(a.id);
    if (tr) tr.classList.add("focused");
    const key = seriesKey(a.exchange, a.symbol);
    el.focusNote.hidden = true;
    if (!chart || !state.series.has(key)) return;
    await selectSeries(key);
    if (state.key !== key || state.focused !== a.id) return; // another click since
    const time = Math.floor(a.time_us / 1e6);
    const first = chart.firstTime();
    if (first === null || time < first) {
      // older than the bars loaded: the server keeps an hour of them
      const data = await getJSON(`/api/bars?${seriesQuery(a.exchange, a.symbol)}&limit=${MAX_BARS}`);
      if (state.key !== key || state.focused !== a.id) return;
      chart.merge(data.bars);
    }
    chart.addAlerts([a]);
    chart.focus(time, a.id);
    // the spikes around it, for their markers (the chart loaded only the latest ones)
    const around = (t) => new Date(t * 1000).toISOString();
    getJSON(
      `/api/signals?${seriesQuery(a.exchange, a.symbol)}&since=${around(time - 2 * FOCUS_S)}` +
        `&until=${around(time + 2 * FOCUS_S)}&limit=1000`,
    )
      .then((page) => {
        if (state.key === key) chart.addSignals(page.signals);
      })
      .catch((err) => console.warn("loading the signals around an alert failed:", err.message));
    const oldest = chart.firstTime();
    if (oldest === null || time < oldest) {
      el.focusNote.textContent =
        `The alert at ${fmtTime(a.time_us).slice(0, 8)} UTC is older than the bars the app ` +
        "keeps (the last hour): the chart shows the oldest it has.";
      el.focusNote.hidden = false;
    }
    const box = el.chart.getBoundingClientRect();
    if (box.bottom < 0 || box.top > window.innerHeight) {
      el.chart.scrollIntoView({ block: "center" }); // a phone: the chart is above the table
    }
  }

  // -- the switch: signals or alerts -----------------------------------------------------

  function setView(view) {
    state.view = view;
    const alerts = view === "alerts";
    el.viewSignals.setAttribute("aria-selected", String(!alerts));
    el.viewAlerts.setAttribute("aria-selected", String(alerts));
    el.signalsView.hidden = alerts;
    el.alertsView.hidden = !alerts;
    el.count.hidden = alerts;
    el.alertCount.hidden = !alerts;
    el.alertOptions.hidden = !alerts;
    if (alerts) {
      state.unseen = 0;
      el.alertBadge.hidden = true;
    }
  }

  // -- sound and notifications for new alerts (off until the user turns them on) ---------

  let audio = null;
  /** A short tone, higher for a more severe alert. */
  function ring(a) {
    if (!state.sound) return;
    try {
      audio = audio || new AudioContext();
      if (audio.state === "suspended") audio.resume();
      const now = audio.currentTime;
      const tone = audio.createOscillator();
      const gain = audio.createGain();
      tone.frequency.value = SEVERITY_TONE[a.severity] || SEVERITY_TONE.warning;
      gain.gain.setValueAtTime(0.0001, now);
      gain.gain.exponentialRampToValueAtTime(0.2, now + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + 0.4);
      tone.connect(gain).connect(audio.destination);
      tone.start(now);
      tone.stop(now + 0.45);
      state.sounds += 1;
    } catch (err) {
      console.info("no sound:", err.message);
    }
  }

  const canNotify = () => "Notification" in window;

  function notifyOf(a) {
    if (!state.notify || !canNotify() || Notification.permission !== "granted") return;
    try {
      const note = new Notification(`${a.severity.toUpperCase()} ${a.symbol} ${a.rule}`, {
        body: a.summary,
        tag: a.id,
        icon: "/assets/favicon.svg",
      });
      note.onclick = () => {
        window.focus();
        setView("alerts");
        focusAlert(state.alertIds.get(a.id));
      };
      state.notifications.push(a.id);
    } catch (err) {
      console.info("no notification:", err.message);
    }
  }

  function showToggle(button, on, title) {
    button.setAttribute("aria-pressed", String(on));
    if (title) button.title = title;
  }

  function remember(name, on) {
    try {
      localStorage.setItem(STORED + name, on ? "on" : "off");
    } catch (err) {
      // private mode: the choice lasts as long as the page
    }
  }
  function remembered(name) {
    try {
      return localStorage.getItem(STORED + name) === "on";
    } catch (err) {
      return false;
    }
  }

  function setSound(on) {
    state.sound = on;
    showToggle(el.sound, on);
    remember("sound", on);
    if (on) {
      audio = audio || new AudioContext(); // made on the click: browsers allow sound then
      if (audio.state === "suspended") audio.resume();
    }
  }

  /** Turn notifications on (asking the browser's permission: only ever on a click). */
  async function setNotify(on) {
    if (!on) {
      state.notify = false;
      showToggle(el.notify, false, "Show a browser notification when an alert opens");
      remember("notify", false);
      return;
    }
    if (!canNotify()) {
      showToggle(el.notify, false, "This browser has no notifications");
      return;
    }
    let permission = Notification.permission;
    if (permission === "default") permission = await Notification.requestPermission();
    const granted = permission === "granted";
    state.notify = granted;
    remember("notify", granted);
    showToggle(
      el.notify,
      granted,
      granted
        ? "A browser notification when an alert opens (click to turn off)"
        : "Notifications are blocked for this page in the browser's settings",
    );
  }

  function setUpAlertControls() {
    el.viewSignals.addEventListener("click", () => setView("signals"));
    el.viewAlerts.addEventListener("click", () => setView("alerts"));
    el.sound.addEventListener("click", () => setSound(!state.sound));
    el.notify.addEventListener("click", () => setNotify(!state.notify));
    // What was on before: sound (the browser may hold it until the next click) and
    // notifications only if their permission is still granted (never asked for here).
    if (remembered("sound")) {
      state.sound = true;
      showToggle(el.sound, true);
    }
    if (remembered("notify") && canNotify() && Notification.permission === "granted") {
      state.notify = true;
      showToggle(el.notify, true);
    }
  }

  // -- the chart's symbol ----------------------------------------------------------------

  let reconcile = { at: 0, upTo: null, busy: false };

  /** Load the chart's history: bars, and signals for markers. */
  async function loadChart(key) {
    const token = ++state.loadToken;
    const { exchange, symbol } = state.series.get(key);
    el.chartTitle.textContent = `${seriesName(exchange, symbol)} · price and volume`;
    const q = seriesQuery(exchange, symbol);
    const [bars, signals, alerts] = await Promise.all([
      getJSON(`/api/bars?${q}&limit=${BAR_LIMIT}`),
      getJSON(`/api/signals?${q}&limit=100`),
      // the chart does without alert markers rather than without its bars
      state.alertRules
        ? getJSON(`/api/alerts?${q}&limit=100`).catch(() => ({ alerts: [] }))
        : { alerts: [] },
    ]);
    if (token !== state.loadToken || !chart) return;
    chart.load(bars.bars, signals.signals.length ? signals.signals[0].price : null);
    chart.addSignals(signals.signals);
    chart.addSignals([...(state.liveSignals.get(key) || new Map()).values()]);
    // the table's folds are as new as the stream's: they win over the page just read
    chart.addAlerts(alerts.alerts.map((a) => state.alertIds.get(a.id) || a));
    chart.addAlerts(state.alerts.filter((a) => seriesKey(a.exchange, a.symbol) === key));
    reconcile = { at: Date.now(), upTo: chart.lastTime(), busy: false };
  }

  /**
   * A `status` event carries only the forming bar, so the last state of a bar that
   * closed between two events (or a whole bar, when trades are replayed faster than real
   * time) is not in the stream: once bars have closed since the last read, re-read the
   * recent ones (at most every RECONCILE_MS) so that closed bars show their final values.
   */
  async function reconcileBars(key, newest) {
    if (reconcile.upTo != null && newest <= reconcile.upTo) return; // nothing closed since
    if (reconcile.busy || Date.now() - reconcile.at < RECONCILE_MS) return;
    const since = reconcile.upTo == null ? newest - 5 : reconcile.upTo;
    const limit = Math.max(2, Math.min(MAX_BARS, newest - since + 2));
    reconcile.busy = true;
    try {
      const { exchange, symbol } = state.series.get(key);
      const data = await getJSON(`/api/bars?${seriesQuery(exchange, symbol)}&limit=${limit}`);
      if (key === state.key && chart) {
        chart.merge(data.bars);
        if (data.bars.length) reconcile.upTo = data.bars[data.bars.length - 1].time;
      }
    } catch (err) {
      // the stream's own state shows an outage; the next new bar tries again
    } finally {
      reconcile.at = Date.now();
      reconcile.busy = false;
    }
  }

  function onStatus(list) {
    const mine = list.filter((info) => (info.exchange || state.exchange) === state.exchange);
    // without `totals` events (a server that lists every symbol in each status event):
    // the link and the totals from the entries
    if (mine.length && state.totals === null) {
      const down = mine.find((info) => info.connection !== "connected");
      state.link = { ...state.link, state: down ? down.connection : "connected" };
      state.trades = mine.reduce((sum, info) => sum + info.trades, 0);
      showLink();
      if (down) watchLink(state.link.lastError ? STATUS_POLL_MS : 0);
      const rate = mine.reduce((sum, info) => sum + (info.trades_per_s || 0), 0);
      showTotals(mine.length, state.trades, rate);
    }
    const heard = new Set();
    for (const info of list) {
      const exchange = info.exchange || state.exchange;
      const key = seriesKey(exchange, info.symbol);
      if (!state.series.has(key)) {
        if (!state.many || exchange !== state.exchange) continue; // not one the page was told of
        state.series.set(key, { exchange, symbol: info.symbol }); // listed since the page opened
      }
      heard.add(key);
      showSymbol(exchange, info.symbol, info);
      if (chart && key === state.key && info.bar) {
        chart.live(info.bar);
        reconcileBars(key, info.bar.time);
      }
    }
    if (state.many) {
      // beyond 50 symbols an event lists only those that traded since the last one: a
      // card it leaves out had no trade in that second
      for (const key of new Set([...state.cards.keys(), state.key])) {
        const known = key && state.info.get(key);
        if (known && !heard.has(key) && known.trades_per_s) {
          const { exchange, symbol } = state.series.get(key);
          showSymbol(exchange, symbol, { ...known, trades_per_s: 0 });
        }
      }
    }
  }

  /** The `totals` event: every watched symbol of the exchange (the header's total, the
   * link's state), however many symbols the `status` event before it left out. */
  function onTotals(t) {
    if (t.exchange !== state.exchange) return;
    state.totals = t;
    state.trades = t.trades;
    state.link = { ...state.link, state: t.connection };
    showLink();
    if (t.connection !== "connected") watchLink(state.link.lastError ? STATUS_POLL_MS : 0);
    showTotals(t.symbols, t.trades, t.trades_per_s);
    if (state.many && t.connection === "connected") {
      // every connection is up, so every symbol is connected: a card of a quiet symbol
      // (no status entry since the stream came back) says so too
      for (const [key, li] of state.cards) {
        const known = state.info.get(key);
        if (known && li.dataset.connection !== "connected") {
          const { exchange, symbol } = state.series.get(key);
          showSymbol(exchange, symbol, { ...known, connection: "connected" });
        }
      }
    }
  }

  /** The header's total over every watched symbol (shown when more than one is). */
  function showTotals(symbols, trades, rate) {
    el.totals.hidden = !multi();
    el.totals.dataset.trades = String(trades);
    el.totals.dataset.symbols = String(symbols);
    const pace = rate == null ? "" : ` · ${number(rate, 0, 0)} trades/s`;
    el.totals.textContent =
      `${number(symbols, 0, 0)} symbols · ${number(trades, 0, 0)} trades${pace}`;
  }

  /** Show one series ("exchange:SYMBOL") on the chart; resolves when its history is loaded. */
  function selectSeries(key) {
    if (key === state.key) return state.chartLoad || Promise.resolve();
    if (!state.series.has(key)) return Promise.resolve();
    state.key = key;
    state.symbol = state.series.get(key).symbol;
    el.symbol.value = key;
    if (state.page === "symbol") history.replaceState(null, "", `#${key}`);
    for (const [name, li] of state.cards) li.classList.toggle("selected", name === key);
    shownPrice = null;
    el.price.textContent = "—";
    el.rate.textContent = "";
    if (state.many) {
      noteRecent(key);
      drawCards();
      // a quiet symbol may have no status entry for long: its last state heard, now
      const known = state.info.get(key);
      if (known && known.connection != null) showQuote(known);
    }
    if (!chart) return Promise.resolve();
    chart.reset();
    state.chartLoad = loadChart(key).catch((err) =>
      console.warn("loading the chart failed:", err.message),
    );
    return state.chartLoad;
  }

  // -- the live stream -------------------------------------------------------------------

  let source = null;
  let retryTimer = null;
  let firstAnswer = null; // resolves when the first stream opened, or failed to
  const streamAnswered = new Promise((resolve) => {
    firstAnswer = resolve;
  });

  function setStream(value) {
    state.stream = value;
    el.stream.dataset.state = value;
    el.banner.hidden = value === "live" || value === "connecting";
    if (value !== "live") {
      // What the symbols are doing is unknown until the stream is back.
      state.link = { ...state.link, state: "unknown" };
      for (const li of state.cards.values()) {
        li.dataset.connection = "unknown";
        li.querySelector(".conn").textContent = "unknown";
      }
    }
    showLink();
  }

  // -- the exchange connection -----------------------------------------------------------

  const exchangeName = () => EXCHANGE_NAMES[state.exchange] || state.exchange || "the exchange";

  /** Learn the exchange connection from /api/status. */
  function onEngineStatus(status) {
    const c = status.connection || {};
    state.link = {
      state: status.running === false ? "stopped" : c.state || "unknown",
      lastError: c.last_error ?? null,
      failedAttempts: c.failed_attempts || 0,
      connectedSince: c.connected_since ?? null,
    };
    const symbols = Object.values(status.symbols || {});
    state.trades = symbols.reduce((sum, s) => sum + s.trades, 0);
    showLink();
    showTotals(symbols.length, state.trades, state.totals ? state.totals.trades_per_s : null);
  }

  let pollTimer = null;
  /** While the exchange is not connected, re-read /api/status (for its last error). */
  function watchLink(delay) {
    if (pollTimer !== null) return;
    const wanted = () => state.stream === "live" && state.link.state !== "connected";
    pollTimer = setTimeout(async () => {
      try {
        if (wanted()) onEngineStatus(await getJSON("/api/status"));
      } catch (err) {
        // the stream's own state shows an outage of the app; the next event tries again
      } finally {
        pollTimer = null;
      }
      if (wanted()) watchLink(STATUS_POLL_MS);
    }, delay);
  }

  /**
   * The header's pill and the chart panel's notice. The pill says "live" only while the
   * stream is open AND the app is connected to the exchange; otherwise the notice says
   * why no market data comes (the exchange's last error, and what to try).
   */
  function showLink() {
    const link = state.link;
    const name = exchangeName();
    let look = state.stream;
    let text = STREAM_TEXT[state.stream];
    let title = "Live stream (/api/stream): disconnected";
    if (state.stream === "live") {
      if (link.state === "connected") {
        const since = link.connectedSince
          ? ` since ${new Date(link.connectedSince).toISOString().slice(11, 19)} UTC`
          : "";
        title = `Live: connected to ${name}${since}`;
      } else if (link.state === "stopped") {
        [look, text, title] = ["offline", "stopped", "The app has stopped reading the exchange"];
      } else if (link.lastError) {
        [look, text, title] = ["offline", "offline", `Not connected to ${name}`];
      } else {
        [look, text, title] = ["connecting", STREAM_TEXT.connecting, `Connecting to ${name}…`];
      }
    } else if (state.stream === "connecting") {
      title = "Opening the live stream (/api/stream)…";
    }
    el.stream.dataset.look = look;
    el.stream.dataset.exchange = link.state;
    el.stream.textContent = text;
    el.stream.title = title;
    showLinkNote(name);
  }

  function showLinkNote(name) {
    const link = state.link;
    const note = el.exchangeNote;
    if (state.stream !== "live" || link.state === "connected" || link.state === "unknown") {
      note.hidden = true;
      return;
    }
    const quiet = state.trades === 0;
    const parts = [];
    let kind = "connecting";
    if (link.state === "stopped") {
      kind = "offline";
      parts.push(`Not receiving trades from ${name}: the app's engine is stopped.`);
    } else if (link.lastError) {
      kind = "offline";
      let error = link.lastError.trim().replace(/[.\s]+$/, "");
      if (error.length > MAX_ERROR_CHARS) error = `${error.slice(0, MAX_ERROR_CHARS)}…`;
      parts.push(`Not connected to ${name}: ${error}.`);
    } else {
      parts.push(`Connecting to ${name}…`);
    }
    if (quiet) parts.push("No trades yet.");
    if (kind === "offline" && link.state !== "stopped") {
      const n = link.failedAttempts;
      parts.push(
        n > 0 ? `Retrying (${n} failed attempt${n === 1 ? "" : "s"} so far).` : "Reconnecting…",
      );
    }
    const children = [parts.join(" ")];
    if (kind === "offline" && quiet && link.state !== "stopped") {
      // No internet (or Binance blocked here)? The demo plays a bundled recording.
      const code = document.createElement("code");
      code.textContent = "make demo";
      children.push(" Offline? Try ", code, ".");
    }
    note.replaceChildren(...children);
    note.title = link.lastError || "";
    note.dataset.kind = kind;
    note.hidden = false;
  }

  function openStream() {
    clearTimeout(retryTimer);
    // The browser resumes by itself (Last-Event-ID); a stream opened anew says where it was.
    const exchange = `exchange=${encodeURIComponent(state.exchange)}`;
    const url =
      state.lastEventId == null
        ? `/api/stream?${exchange}`
        : `/api/stream?${exchange}&last_event_id=${encodeURIComponent(state.lastEventId)}`;
    const es = new EventSource(url);
    source = es;
    es.onopen = () => {
      const resumed = state.everConnected && state.stream !== "live";
      state.everConnected = true;
      setStream("live");
      if (state.link.state === "unknown") watchLink(0); // the exchange's state, at once
      firstAnswer();
      if (resumed && state.key) {
        // Bars of the outage were missed: read them again (signals come by Last-Event-ID).
        loadChart(state.key).catch((err) => console.warn("reloading the chart failed:", err.message));
      }
      if (resumed) {
        // alerts are not replayed by the stream: read those raised or updated meanwhile
        loadAlerts().catch((err) => console.warn("reloading the alerts failed:", err.message));
      }
    };
    es.onerror = () => {
      firstAnswer();
      if (es !== source) return;
      if (es.readyState === EventSource.CLOSED) {
        setStream("offline"); // refused (e.g. 503): the browser will not retry, so we do
        retryTimer = setTimeout(openStream, RETRY_MS);
      } else {
        setStream(state.everConnected ? "reconnecting" : "connecting");
      }
    };
    es.addEventListener("status", (event) => onStatus(JSON.parse(event.data)));
    es.addEventListener("signal", (event) => {
      if (event.lastEventId) state.lastEventId = event.lastEventId;
      onSignal(JSON.parse(event.data));
    });
    es.addEventListener("alert", (event) => onAlert(JSON.parse(event.data)));
    es.addEventListener("totals", (event) => onTotals(JSON.parse(event.data)));
  }

  // -- the market view -------------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";
  const WINDOW_TEXT = { "5m": "the last 5 minutes", "1h": "the last hour" };
  const multi = () => state.series.size > 1;

  /** A spark line of counts per bucket (oldest first), as columns: counts read as bars. */
  function spark(counts, bucketS) {
    const width = 120;
    const height = 22;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    svg.setAttribute("class", "spark");
    svg.setAttribute("preserveAspectRatio", "none");
    const top = Math.max(1, ...counts);
    const step = width / counts.length;
    const base = document.createElementNS(SVG, "line");
    base.setAttribute("x1", "0");
    base.setAttribute("x2", String(width));
    base.setAttribute("y1", String(height - 0.5));
    base.setAttribute("y2", String(height - 0.5));
    base.setAttribute("class", "base");
    svg.append(base);
    counts.forEach((count, i) => {
      if (!count) return;
      const bar = document.createElementNS(SVG, "rect");
      const h = Math.max(2, (count / top) * (height - 2));
      bar.setAttribute("x", (i * step + step * 0.1).toFixed(2));
      bar.setAttribute("width", Math.max(1, step * 0.8).toFixed(2));
      bar.setAttribute("y", (height - h).toFixed(2));
      bar.setAttribute("height", h.toFixed(2));
      if (i === counts.length - 1) bar.setAttribute("class", "now");
      svg.append(bar);
    });
    const total = counts.reduce((a, b) => a + b, 0);
    const unit = bucketS >= 60 ? `${bucketS / 60} min` : `${bucketS} s`;
    svg.setAttribute("role", "img");
    svg.setAttribute(
      "aria-label",
      total
        ? `signals per ${unit}: at most ${top} in one, ${counts[counts.length - 1]} in the latest`
        : "no signals",
    );
    return svg;
  }

  /** A value and its unit in one cell: "617.3k USD", "40.2 ×". */
  function usdCell(td, usd) {
    if (usd == null) {
      td.textContent = "—";
      td.title = "no signal with a known USD value in the window";
      return;
    }
    const short = fmtUsd(usd).slice(1); // "$617.3k" -> "617.3k"
    withUnit(td, short, "USD");
    td.title = fmtUsdExact(usd);
  }

  function marketRow(r, bucketS) {
    const key = seriesKey(r.exchange, r.symbol);
    const tr = document.createElement("tr");
    tr.dataset.key = key;
    tr.dataset.symbol = r.symbol;
    tr.dataset.exchange = r.exchange;
    tr.dataset.signals = String(r.signals);
    tr.tabIndex = 0;
    tr.title = `Open ${seriesName(r.exchange, r.symbol)}: its chart and signals`;
    const quiet = r.signals === 0 && r.alerts === 0;
    if (quiet) tr.classList.add("quiet");
    cell(tr, String(r.rank), "num rank");
    const venue = document.createElement("span");
    venue.className = "venue";
    venue.textContent = `· ${r.exchange}`;
    const name = cell(tr, `${r.symbol} `, "name");
    name.append(venue);
    cell(tr, number(r.signals, 0, 0), "num count");
    cell(tr, number(r.alerts, 0, 0), `num count${r.alerts ? " alerted" : ""}`);
    usdCell(cell(tr, "", "num"), r.usd_max);
    const ratio = cell(tr, r.ratio_max == null ? "—" : fmtRatio(r.ratio_max), "num");
    ratio.title = r.ratio_max == null ? "no ratio in the window" : "volume / the detector's baseline";
    cell(tr, "", "spark-col").append(spark(r.spark, bucketS));
    withUnit(cell(tr, "", "num"), fmtPrice(r.last_price), r.last_price == null ? null : r.quote);
    const last = cell(tr, "", "last-signal");
    const s = r.last_signal;
    if (s) {
      const side = document.createElement("span");
      side.className = `side ${s.side}`;
      side.textContent = s.side;
      const time = document.createElement("span");
      time.className = "time";
      time.textContent = `${fmtTime(s.time_us).slice(0, 8)} `;
      const volume = document.createElement("span");
      withUnit(volume, ` ${fmtVolume(s.volume)}`, r.base);
      last.append(time, side, volume);
      last.title = `${s.timestamp} · ${s.detector} · ${fmtPrice(s.price)}${r.quote ? ` ${r.quote}` : ""}`;
    } else {
      last.textContent = "—";
    }
    tr.addEventListener("click", () => openSymbol(key));
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        openSymbol(key);
      }
    });
    return tr;
  }

  /** Draw the leaderboard (the focused row keeps its focus). */
  function drawMarket(body) {
    const m = state.market;
    if (m.pressed && Date.now() - m.pressed < 10_000) {
      // a busy market redraws the board about every second: rows replaced between the
      // press and the release of a click would swallow it (its row is gone); a pointer
      // released outside the window holds it up 10 s at most
      m.held = body;
      return;
    }
    m.rows = body.rows;
    const focused = document.activeElement && document.activeElement.closest
      ? document.activeElement.closest("#market tr[data-key]")
      : null;
    const keep = focused ? focused.dataset.key : null;
    const before = new Map(
      [...el.market.querySelectorAll("tr[data-key]")].map((tr) => [tr.dataset.key, tr.dataset.signals]),
    );
    const rows = body.rows.map((r) => {
      const tr = marketRow(r, body.bucket_s);
      // a row whose count went up flashes, as a new signal's row does
      const was = before.get(tr.dataset.key);
      if (was != null && Number(was) < r.signals) tr.classList.add("fresh");
      return tr;
    });
    el.market.replaceChildren(...rows);
    if (keep) {
      const again = rows.find((tr) => tr.dataset.key === keep);
      if (again) again.focus({ preventScroll: true });
    }
    el.marketEmpty.hidden = body.rows.length > 0;
    el.marketEmpty.textContent = m.q
      ? `No watched symbol contains “${m.q.toUpperCase()}”.`
      : "No symbols watched.";
    const shown = body.count < body.total ? `top ${body.count} of ${body.total}` : `${body.total}`;
    const at = body.now ? ` · at ${body.now.slice(11, 19)} UTC (exchange time)` : "";
    el.marketCount.textContent = `${shown} symbol${body.total === 1 ? "" : "s"}${at}`;
    el.marketBucket.textContent = body.bucket_s >= 60 ? `${body.bucket_s / 60} min` : `${body.bucket_s} s`;
    m.reads += 1;
  }

  /** Read the leaderboard now (a newer request wins over one still on its way). */
  async function readMarket() {
    const m = state.market;
    clearTimeout(m.timer);
    m.timer = null;
    const token = ++m.token;
    if (document.hidden) return; // a hidden tab reads nothing; it reads again when shown
    const query = new URLSearchParams({
      window: m.window,
      by: m.by,
      limit: String(MARKET_ROWS),
      exchange: state.exchange,
    });
    if (m.q) query.set("q", m.q);
    try {
      const body = await getJSON(`/api/top?${query}`);
      if (token === m.token && state.page === "market") drawMarket(body);
    } catch (err) {
      // the stream's pill shows an outage of the app; the next poll tries again
    } finally {
      if (token === m.token && state.page === "market") {
        m.timer = setTimeout(readMarket, MARKET_POLL_MS);
      }
    }
  }

  /** A signal came: read the board soon (at most once per MARKET_NUDGE_MS). */
  function nudgeMarket() {
    const m = state.market;
    const wait = MARKET_NUDGE_MS - (Date.now() - m.nudged);
    if (wait <= 0) {
      m.nudged = Date.now();
      readMarket();
    } else if (m.timer === null || wait < MARKET_NUDGE_MS) {
      clearTimeout(m.timer);
      m.timer = setTimeout(() => {
        m.nudged = Date.now();
        readMarket();
      }, wait);
    }
  }

  function setWindow(name) {
    state.market.window = name;
    for (const button of el.windows) {
      button.setAttribute("aria-pressed", String(button.dataset.window === name));
    }
    readMarket();
  }

  /** The pointer came up: the click (if any) has its row; then the held answer. */
  function releaseMarket() {
    const m = state.market;
    if (!m.pressed) return;
    m.pressed = 0;
    setTimeout(() => {
      const body = m.held;
      m.held = null;
      if (body && !m.pressed && state.page === "market") drawMarket(body);
    }, 0);
  }

  function setUpMarket() {
    el.market.addEventListener("pointerdown", () => {
      state.market.pressed = Date.now();
    });
    for (const name of ["pointerup", "pointercancel"]) {
      document.addEventListener(name, releaseMarket);
    }
    for (const button of el.windows) {
      button.addEventListener("click", () => setWindow(button.dataset.window));
    }
    el.marketBy.addEventListener("change", () => {
      state.market.by = el.marketBy.value;
      readMarket();
    });
    let typing = null;
    el.marketSearch.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        // letters and digits only (what the API takes): "btc/usdt" searches "btcusdt"
        state.market.q = el.marketSearch.value.replace(/[^A-Za-z0-9]/g, "").slice(0, 30);
        readMarket();
      }, SEARCH_DELAY_MS);
    });
    el.marketSearch.addEventListener("keydown", (event) => {
      // Enter: open the first match, as a search box is expected to
      if (event.key !== "Enter") return;
      const first = el.market.querySelector("tr[data-key]");
      if (first) openSymbol(first.dataset.key);
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.page === "market") readMarket();
    });
    el.toMarket.addEventListener("click", (event) => {
      event.preventDefault();
      history.pushState(null, "", "#market");
      route();
    });
  }

  /** Show the leaderboard or the symbol view. */
  function showPage(page) {
    state.page = page;
    const market = page === "market";
    document.body.dataset.page = page;
    el.marketView.hidden = !market;
    el.symbolView.hidden = market;
    el.toMarket.hidden = market || !multi();
    el.price.parentElement.hidden = market;
    if (market) {
      el.symbol.value = ""; // "Open a symbol…": any symbol picked opens it
      document.title = "Market · spikewatch";
      readMarket();
    } else {
      clearTimeout(state.market.timer);
      state.market.timer = null;
      state.market.token += 1; // an answer on its way is not drawn
    }
  }

  /** Open one series' chart from the leaderboard (a new history entry: Back returns). */
  function openSymbol(key) {
    // with many symbols one listed since the page opened is looked up (route)
    if (!state.series.has(key) && !state.many) return Promise.resolve();
    if (location.hash.slice(1) === key && state.page === "symbol") return route();
    history.pushState(null, "", `#${key}`);
    return route();
  }

  /** The series a location hash names: "#binance-usdm:BTCUSDT", or a bare "#BTCUSDT". */
  function seriesOf(hash) {
    const wanted = decodeURIComponent(hash.replace(/^#/, ""));
    if (!wanted) return null;
    const keys = [...state.series.keys()];
    return (
      keys.find((key) => key.toLowerCase() === wanted.toLowerCase()) ||
      keys.find((key) => state.series.get(key).symbol === wanted.toUpperCase()) ||
      null
    );
  }

  /** Show what the address says: "#market", a series, or (none) the landing page. */
  function route() {
    const hash = location.hash.slice(1);
    const key = seriesOf(hash);
    if (!key && state.many && hash && hash.toLowerCase() !== "market") {
      // not among the symbols the page knows: one listed since it opened (or a link from
      // another day); the server says whether it is watched
      const wanted = decodeURIComponent(hash);
      const named = wanted.includes(":") ? wanted : seriesKey(state.exchange, wanted);
      const at = named.indexOf(":");
      const full = seriesKey(named.slice(0, at).toLowerCase(), named.slice(at + 1).toUpperCase());
      return learnSeries(full).then((known) => {
        if (location.hash.slice(1) !== hash) return undefined; // moved on meanwhile
        if (known) return route();
        showPage("market");
        return undefined;
      });
    }
    if (hash.toLowerCase() === "market" || (!key && multi())) {
      showPage("market");
      return Promise.resolve();
    }
    showPage("symbol");
    const chosen = key || [...state.series.keys()][0];
    const loading = selectSeries(chosen);
    history.replaceState(null, "", `#${chosen}`);
    return loading;
  }

  // -- start -----------------------------------------------------------------------------

  async function start() {
    let status;
    for (;;) {
      try {
        status = await getJSON("/api/status");
        break;
      } catch (err) {
        await sleep(RETRY_MS);
      }
    }
    state.exchange = status.exchange;
    state.alertRules = status.alerts != null;
    const listed = Object.values(status.symbols);
    state.many = listed.length > MANY;
    if (state.many) {
      state.pinned = storedKeys("pinned");
      state.recent = storedKeys("recent").slice(0, MAX_RECENT + 1);
      setUpFind();
    }
    setUpAlertControls();
    setView(state.alertRules ? "alerts" : "signals");
    // what the picker shows on the leaderboard, where no series is on the chart
    const none = document.createElement("option");
    none.value = "";
    none.textContent = "Open a symbol…";
    none.disabled = true;
    none.hidden = true;
    el.symbol.append(none);
    for (const info of listed) {
      const exchange = info.exchange || status.exchange;
      const key = seriesKey(exchange, info.symbol);
      state.series.set(key, { exchange, symbol: info.symbol });
      if (!state.many) {
        const option = document.createElement("option");
        option.value = key;
        option.textContent = seriesName(exchange, info.symbol);
        el.symbol.append(option);
      }
      showSymbol(exchange, info.symbol, info); // many symbols: kept for a card shown later
    }
    onEngineStatus(status);
    // The stream first (its subscription exists once it opens), then the history: a
    // signal raised in between is in one or the other, and de-duplicated by id.
    openStream();
    // the picker opens the series it names (from the leaderboard too)
    el.symbol.addEventListener("change", () =>
      state.page === "market" ? openSymbol(el.symbol.value) : selectSeries(el.symbol.value),
    );
    setUpMarket();
    window.addEventListener("popstate", () => route());
    await Promise.race([streamAnswered, sleep(RETRY_MS)]);
    // "#market", "#binance-usdm:BTCUSDT", a bare "#BTCUSDT" (links from before exchanges
    // were named), or nothing: the leaderboard when more than one symbol is watched, else
    // the one symbol's chart
    const chartLoaded = route();
    const [signals] = await Promise.all([
      getJSON(`/api/signals?exchange=${encodeURIComponent(state.exchange)}&limit=${MAX_ROWS}`),
      // the alerts table stays empty rather than the page unready (live ones still come)
      loadAlerts().catch((err) => console.warn("loading the alerts failed:", err.message)),
    ]);
    addToTable(signals.signals, false);
    await chartLoaded;
    state.ready = true;
    document.body.dataset.ready = "true";
  }

  window.spikewatch = {
    get ready() {
      return state.ready;
    },
    get stream() {
      return state.stream;
    },
    get symbol() {
      return state.symbol;
    },
    get exchange() {
      return state.exchange;
    },
    chart: chart !== null,
    rendered: state.rendered,
    marked: state.marked,
    rows: () => state.signals.length,
    bars: () => (chart ? chart.barCount() : 0),
    markers: () => (chart ? chart.markerIds() : []),
    get view() {
      return state.view;
    },
    alerts: () => state.alerts.slice(),
    alertMarkers: () => (chart ? chart.alertMarkerIds() : []),
    visibleRange: () => (chart ? chart.visibleRange() : null),
    get sounds() {
      return state.sounds;
    },
    notifications: state.notifications,
    get page() {
      return state.page;
    },
    market: () => ({ ...state.market, rows: state.market.rows.slice() }),
    get many() {
      return state.many;
    },
    cards: () => [...state.cards.keys()],
    totals: () => state.totals,
    get finds() {
      return state.find.reads;
    },
  };

  start().catch((err) => console.warn("starting the dashboard failed:", err.message));
})();
