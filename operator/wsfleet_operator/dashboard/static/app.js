// wsfleet dashboard: live fleet state over server-sent events, charts in plain SVG.
// No framework, no build step, no CDN. Every string from the API goes through
// textContent (never innerHTML).
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#e8590c", "#0f9d58", "#9c36b5", "#d6336c", "#0c8599", "#5c940d"];
  const NAMED = { actual: "#2563eb", forecast: "#e8590c", desired: "#9c36b5", ready: "#0f9d58",
    current: "#868e96", scraped: "#0c8599", p95: "#2563eb", p99: "#d6336c" };
  const BAND_COLOR = "#e8590c";
  // anomaly signals (status.anomalies) and how the timeline marks them
  const SIGNAL_COLORS = { SwitchLatency: "#d6336c", DeliveryLatency: "#c2255c",
    ConnectFlood: "#e67700", MemoryLeak: "#7048e8" };
  const MAX_SERIES_INTERVAL_S = 30; // refetch charts at most every step (≤ 30 s)
  const HEADLINE = ["Capped", "MetricsAvailable", "Degraded"];
  // Conditions where "True" is good news; for the rest "True" is a warning.
  const GOOD_WHEN_TRUE = new Set(["MetricsAvailable", "Ready", "Available", "ForecastAccurate"]);
  const BAD_WHEN_TRUE = new Set(["Degraded", "Anomaly"]);

  const token = new URLSearchParams(location.search).get("token");
  const el = (id) => document.getElementById(id);
  const rangeSelect = el("range");
  const cards = new Map();   // "ns/name" -> card elements
  const inflight = new Set();
  let last = null;           // last /api/fleets payload

  function withToken(url) {
    if (!token) return url;
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  function h(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function s(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  // ---------- formatting ----------
  function fmtNumber(v) {
    if (v === null || v === undefined) return "—";
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
    if (Number.isInteger(v)) return String(v);
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }
  function fmtBytes(v) {
    const a = Math.abs(v);
    if (a >= 1024 ** 3) return (v / 1024 ** 3).toFixed(a >= 10 * 1024 ** 3 ? 0 : 1) + " GiB";
    if (a >= 1024 ** 2) return (v / 1024 ** 2).toFixed(a >= 100 * 1024 ** 2 ? 0 : 1) + " MiB";
    if (a >= 1024) return (v / 1024).toFixed(a >= 100 * 1024 ? 0 : 1) + " KiB";
    return Math.round(v) + " B";
  }
  function fmt(v, unit) {
    if (v === null || v === undefined) return "—";
    if (unit === "bytes") return fmtBytes(v);
    if (unit === "seconds") {
      if (Math.abs(v) < 1) return (v * 1000).toFixed(v * 1000 >= 10 ? 0 : 1) + " ms";
      return v.toFixed(2) + " s";
    }
    if (unit === "ratio") return (v * 100).toFixed(v >= 0.999 || v === 0 ? 0 : 1) + "%";
    if (unit === "per_second") return fmtNumber(v) + "/s";
    if (unit === "replicas") return fmtNumber(Math.round(v * 100) / 100);
    return fmtNumber(Math.round(v * 100) / 100);
  }
  function fmtTime(t, withSeconds) {
    const d = new Date(t * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return p(d.getHours()) + ":" + p(d.getMinutes()) + (withSeconds ? ":" + p(d.getSeconds()) : "");
  }
  function fmtAgo(iso) {
    if (!iso) return "";
    const secs = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (secs < 90) return secs + " s ago";
    if (secs < 5400) return Math.round(secs / 60) + " min ago";
    return Math.round(secs / 3600) + " h ago";
  }

  // ---------- status header ----------
  function setPill(node, text, level, title) {
    node.textContent = text;
    node.className = "pill " + (level || "");
    if (title !== undefined) node.title = title;
  }

  function renderPrometheus(prom) {
    const banner = el("banner");
    if (!prom.configured) {
      setPill(el("prom-status"), "Prometheus not configured", "warn", prom.error || "");
      banner.hidden = true;
    } else if (prom.available) {
      setPill(el("prom-status"), "Prometheus up", "good", "");
      banner.hidden = true;
    } else {
      setPill(el("prom-status"), "Prometheus unavailable", "bad", prom.error || "");
      banner.textContent = "Prometheus unavailable" + (prom.error ? ": " + prom.error : "") +
        " — live metrics are not shown; the fleet state below comes from its autoscaler.";
      banner.hidden = false;
    }
  }

  // ---------- fleet cards ----------
  function conditionLevel(c) {
    if (c.status === "Unknown") return "";
    const isTrue = c.status === "True";
    if (GOOD_WHEN_TRUE.has(c.type)) return isTrue ? "good" : "bad";
    if (BAD_WHEN_TRUE.has(c.type)) return isTrue ? "bad" : "good";
    return isTrue ? "warn" : "good";
  }

  function makeStat(key, label) {
    const box = h("div", "stat");
    box.dataset.stat = key;
    box.append(h("div", "label", label), h("div", "value", "—"));
    return box;
  }

  function ensureCard(f) {
    const key = f.namespace + "/" + f.name;
    let card = cards.get(key);
    if (card) return card;
    const root = h("section", "fleet");
    root.dataset.fleet = key;
    const head = h("div", "fleet-head");
    const title = h("h2");
    title.append(h("span", "ns", f.namespace + " / "), h("span", "", f.name));
    const badges = h("div", "badges");
    head.append(title, badges);
    const stats = h("div", "stats");
    const statDefs = [["connections", "Connections now"], ["desired", "Desired"],
      ["current", "Current"], ["ready", "Ready"], ["bounds", "Min – max"],
      ["gateways", "Gateways scraped"]];
    const statNodes = {};
    for (const [k, label] of statDefs) {
      statNodes[k] = makeStat(k, label);
      stats.append(statNodes[k]);
    }
    const decision = h("div", "decision");
    const charts = h("div", "charts");
    const events = h("div", "events");
    const anomalies = h("div", "events anomalies");
    root.append(head, stats, decision, charts, events, anomalies);
    el("fleets").append(root);
    card = { key, root, badges, statNodes, decision, charts, events, anomalies,
      chartNodes: new Map(), series: null, fetchedAt: 0, fetchedRange: null };
    cards.set(key, card);
    return card;
  }

  function setStat(card, key, value, opts) {
    const node = card.statNodes[key].querySelector(".value");
    node.textContent = value;
    node.className = "value" + (opts && opts.na ? " na" : "");
    if (opts && opts.title !== undefined) node.title = opts.title;
  }

  function renderFleet(f, prom) {
    const card = ensureCard(f);
    // badges: headline conditions first, then the others
    card.badges.replaceChildren();
    const conds = [...(f.conditions || [])];
    conds.sort((a, b) => rank(a.type) - rank(b.type));
    for (const c of conds) {
      const b = h("span", "pill " + conditionLevel(c), c.type + (c.status === "True" ? "" :
        c.status === "False" ? ": no" : ": ?"));
      b.dataset.condition = c.type;
      b.dataset.status = c.status;
      b.title = [c.type + " = " + c.status, c.reason, c.message].filter(Boolean).join(" — ");
      card.badges.append(b);
    }
    for (const t of HEADLINE) {
      if (!conds.some((c) => c.type === t)) {
        const b = h("span", "pill", t + ": ?");
        b.dataset.condition = t;
        b.dataset.status = "Unknown";
        b.title = t + " not reported yet";
        card.badges.append(b);
      }
    }
    const live = f.live || {};
    if (prom.available) setStat(card, "connections", fmtNumber(live.connections));
    else if (!prom.configured) setStat(card, "connections", "Prometheus not configured", { na: true, title: prom.error || "" });
    else setStat(card, "connections", "Prometheus unavailable", { na: true, title: prom.error || "" });
    setStat(card, "desired", fmtNumber(f.desired_replicas));
    setStat(card, "current", fmtNumber(f.current_replicas));
    setStat(card, "ready", fmtNumber(f.ready_replicas));
    setStat(card, "bounds", (f.min_replicas ?? "?") + " – " + (f.max_replicas ?? "?"));
    if (prom.available) setStat(card, "gateways", fmtNumber(live.gateways));
    else setStat(card, "gateways", "—");

    card.decision.replaceChildren();
    const d = f.last_decision;
    if (d) {
      card.decision.append(h("span", "muted", "Last decision" + (d.time ? " (" + fmtAgo(d.time) + ")" : "") + ": "));
      if (d.replicas !== null && d.replicas !== undefined) card.decision.append(h("b", "", d.replicas + " replicas — "));
      if (d.mode) card.decision.append(h("span", "pill", d.mode), " ");
      card.decision.append(h("span", "reason", d.reason || "no reason given"));
      if (d.capped_by && d.capped_by.length) card.decision.append(h("span", "muted", "  capped by " + d.capped_by.join(", ")));
      const shares = Object.entries(d.sources || {}).filter(([, v]) => v > 0)
        .map(([k, v]) => k + " " + Math.round(v * 100) + "%");
      if (shares.length) card.decision.append(h("span", "muted", "  (" + shares.join(", ") + ")"));
    } else {
      card.decision.append(h("span", "muted", "No scaling decision yet."));
    }
    const fs = Object.entries(f.forecast_summary || {});
    if (fs.length) {
      const line = h("div", "muted");
      line.dataset.role = "forecast-summary";
      line.textContent = "Forecast: " + fs.map(([k, v]) => k + " " + fmtSummary(k, v)).join(" · ");
      card.decision.append(line);
    }
    renderEvents(card, f.events || []);
    renderAnomalies(card, f.anomalies || []);
  }

  function fmtSummary(key, v) {
    if (typeof v === "number" && /At$/.test(key)) return fmtTime(v, false);
    if (typeof v === "number") return fmtNumber(Math.round(v * 1000) / 1000);
    return String(v);
  }

  function rank(type) {
    const i = HEADLINE.indexOf(type);
    return i < 0 ? 100 : i;
  }

  function renderEvents(card, events) {
    card.events.replaceChildren();
    card.events.append(h("h3", "", "Scaling events"));
    if (!events.length) {
      card.events.append(h("div", "muted", "None yet."));
      return;
    }
    const table = h("table");
    for (const e of events.slice(-8).reverse()) {
      const tr = h("tr");
      const t = Date.parse(e.time) / 1000;
      tr.append(h("td", "t", fmtTime(t, true)),
        h("td", "c", (e.from_replicas ?? "?") + " → " + e.to_replicas + (e.dry_run ? " (dry run)" : "")),
        h("td", "", e.reason || ""));
      table.append(tr);
    }
    card.events.append(table);
  }

  function renderAnomalies(card, anomalies) {
    card.anomalies.replaceChildren();
    card.anomalies.append(h("h3", "", "Anomalies"));
    if (!anomalies.length) {
      card.anomalies.append(h("div", "muted", "None detected."));
      return;
    }
    const table = h("table");
    for (const a of anomalies.slice(-8).reverse()) {
      const tr = h("tr");
      tr.dataset.signal = a.signal;
      const t = Date.parse(a.at) / 1000;
      const state = a.resolved_at ? "resolved " + fmtTime(Date.parse(a.resolved_at) / 1000, true) : "open";
      const sig = h("td", "c", a.signal + (a.subject && a.subject !== "fleet" ? " (" + a.subject + ")" : ""));
      sig.style.color = SIGNAL_COLORS[a.signal] || "";
      tr.append(h("td", "t", fmtTime(t, true)), sig, h("td", "t", state), h("td", "", a.message || ""));
      table.append(tr);
    }
    card.anomalies.append(table);
  }

  // ---------- charts ----------
  function colorFor(name, i) {
    return NAMED[name] || COLORS[i % COLORS.length];
  }

  function ensureChart(card, chart) {
    let node = card.chartNodes.get(chart.id);
    if (node) return node;
    const box = h("div", "chart");
    box.dataset.chart = chart.id;
    const title = h("h3", "", chart.title);
    const legend = h("div", "legend");
    const plot = h("div", "plot");
    const svg = s("svg", { role: "img", "aria-label": chart.title });
    const overlay = h("div", "overlay");
    const tip = h("div", "tip");
    tip.hidden = true;
    const note = h("div", "note");
    plot.append(svg, overlay, tip);
    box.append(title, legend, plot, note);
    card.charts.append(box);
    node = { box, legend, svg, overlay, tip, note, data: null };
    card.chartNodes.set(chart.id, node);
    svg.addEventListener("mousemove", (ev) => hover(node, ev));
    svg.addEventListener("mouseleave", () => { node.tip.hidden = true; const c = node.svg.querySelector(".cursor"); if (c) c.remove(); });
    return node;
  }

  function drawChart(node, chart, start, end, now, prom) {
    node.data = { chart, start, end, now };
    const missing = prom && !prom.configured ? "Prometheus not configured" : "Prometheus unavailable";
    const lines = chart.series.filter((l) => l.points.some((p) => p[1] !== null));
    // legend
    node.legend.replaceChildren();
    chart.series.forEach((l, i) => {
      const item = h("span", "item");
      item.dataset.series = l.name;
      item.dataset.last = l.last === null ? "" : String(l.last);
      const sw = h("span", "swatch" + (l.kind === "forecast" ? " dashed" : l.kind === "band" ? " band" : ""));
      const color = l.kind === "band" ? BAND_COLOR : colorFor(l.name, i);
      sw.style.background = color;
      sw.style.color = color;
      item.append(sw, h("span", "", l.name), h("span", "val", fmt(l.last, chart.unit)));
      node.legend.append(item);
    });
    const notes = [];
    if (chart.errors && chart.errors.length) notes.push("Query error: " + chart.errors.join("; "));
    if (chart.omitted_series) notes.push(chart.omitted_series + " more pods not shown (the highest are)");
    node.note.textContent = notes.join(" · ");
    const svg = node.svg;
    svg.replaceChildren();
    const W = Math.max(200, svg.clientWidth || 400), H = 170;
    const m = { l: 46, r: 8, t: 14, b: 18 };
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    node.geom = { W, H, m };
    const unavailableOnly = chart.prometheus_unavailable && !lines.length;
    node.overlay.className = "overlay" + (chart.prometheus_unavailable ? " bad" : "");
    if (unavailableOnly) {
      node.overlay.textContent = missing;
    } else if (!lines.length) {
      node.overlay.textContent = "No data yet";
    } else {
      node.overlay.textContent = "";
    }
    if (chart.prometheus_unavailable && lines.length) {
      node.note.textContent = missing + ": only the autoscaler's own lines are shown.";
    }
    if (unavailableOnly) return; // no axes: nothing here may read as a zero
    let vmax = 0;
    for (const l of lines) {
      for (const p of l.points) {
        const v = l.kind === "band" ? p[2] : p[1];
        if (v !== null && v > vmax) vmax = v;
      }
    }
    if (chart.unit === "ratio") vmax = 1;
    else if (chart.unit === "replicas") vmax = Math.max(4, Math.ceil((vmax * 1.15) / 4) * 4);
    else vmax = vmax > 0 ? niceCeil(vmax * 1.1) : 1;
    const x = (t) => m.l + ((t - start) / (end - start)) * (W - m.l - m.r);
    const y = (v) => H - m.b - (v / vmax) * (H - m.t - m.b);
    node.scale = { x, y, vmax };
    // grid + y labels
    for (let i = 0; i <= 4; i++) {
      const v = (vmax * i) / 4;
      const yy = y(v);
      svg.append(s("line", { class: "grid", x1: m.l, x2: W - m.r, y1: yy, y2: yy }));
      const label = s("text", { class: "axis-label", x: m.l - 4, y: yy + 3, "text-anchor": "end" });
      label.textContent = fmt(v, chart.unit);
      svg.append(label);
    }
    // x labels
    const ticks = 4;
    for (let i = 0; i <= ticks; i++) {
      const t = start + ((end - start) * i) / ticks;
      const label = s("text", { class: "axis-label", x: x(t), y: H - 4,
        "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle" });
      label.textContent = fmtTime(t, end - start < 1800);
      svg.append(label);
    }
    // anomalies: a shaded span from when each began until it ended (or now)
    drawAnomalies(svg, chart, x, start, end, node.data.now, m, H);
    // bands (forecast median to its upper quantile): under the lines
    chart.series.forEach((l) => {
      if (l.kind !== "band" || !l.points.length) return;
      const pts = l.points.filter((p) => p[0] >= start - 1 && p[0] <= end + 1 && p[1] !== null && p[2] !== null);
      if (!pts.length) return;
      let d = "";
      pts.forEach((p, k) => { d += (k ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[2]).toFixed(1); });
      for (let k = pts.length - 1; k >= 0; k--) d += "L" + x(pts[k][0]).toFixed(1) + " " + y(pts[k][1]).toFixed(1);
      const path = s("path", { class: "band", d: d + "Z", fill: BAND_COLOR });
      path.dataset.series = l.name;
      svg.append(path);
    });
    // lines (gaps at nulls)
    chart.series.forEach((l, i) => {
      if (!l.points.length || l.kind === "band") return;
      // replica counts are integers that change at a moment: draw steps
      const steps = chart.unit === "replicas";
      let d = "", pen = false, lastY = 0;
      for (const [t, v] of l.points) {
        if (v === null || t < start - 1 || t > end + 1) { pen = false; continue; }
        const px = x(t).toFixed(1), py = y(v).toFixed(1);
        if (pen && steps) d += "L" + px + " " + lastY;
        d += (pen ? "L" : "M") + px + " " + py;
        pen = true;
        lastY = py;
      }
      if (!d) return;
      const path = s("path", { class: "series" + (l.kind === "forecast" ? " forecast" : ""), d,
        stroke: colorFor(l.name, i) });
      path.dataset.series = l.name;
      svg.append(path);
      if (!d.includes("L")) {
        // isolated points: draw dots so a single sample is visible
        for (const [t, v] of l.points) if (v !== null) svg.append(s("circle", { cx: x(t), cy: y(v), r: 2, fill: colorFor(l.name, i) }));
      }
    });
    // "now", when the view reaches into the forecast's future
    if (node.data.now && node.data.now < end - 1) {
      const xn = x(node.data.now);
      svg.append(s("line", { class: "now", x1: xn, x2: xn, y1: m.t, y2: H - m.b }));
      const lbl = s("text", { class: "axis-label", x: xn + 3, y: m.t + 8 });
      lbl.textContent = "now";
      svg.append(lbl);
    }
    // scaling events
    for (const mk of chart.markers || []) {
      if (mk.t < start || mk.t > end) continue;
      const g = s("g", { class: "marker" });
      const xx = x(mk.t);
      g.append(s("line", { x1: xx, x2: xx, y1: m.t, y2: H - m.b }));
      g.append(s("line", { class: "hit", x1: xx, x2: xx, y1: m.t, y2: H - m.b }));
      g.append(s("path", { d: `M${xx - 4} ${m.t - 8} L${xx + 4} ${m.t - 8} L${xx} ${m.t - 2} Z` }));
      const lbl = s("text", { x: xx + 5, y: m.t - 3 });
      lbl.textContent = mk.label;
      g.append(lbl);
      const title = s("title");
      title.textContent = fmtTime(mk.t, true) + "  " + mk.label + ": " + (mk.reason || "no reason given");
      g.append(title);
      svg.append(g);
    }
  }

  // the payload's anomalies that this chart marks (chart.anomaly_signals; "*": all)
  function anomaliesOf(chart, all) {
    const signals = chart.anomaly_signals || [];
    if (!signals.length) return [];
    return (all || []).filter((a) => signals.includes("*") || signals.includes(a.signal));
  }

  function drawAnomalies(svg, chart, x, start, end, now, m, H) {
    const marks = chart.anomalies || [];
    marks.forEach((a, k) => {
      const until = a.until === null || a.until === undefined ? (now || end) : a.until;
      if (until < start || a.t > end) return;
      const x0 = x(Math.max(a.t, start)), x1 = Math.max(x0 + 2, x(Math.min(until, end)));
      const color = SIGNAL_COLORS[a.signal] || "#d6336c";
      const g = s("g", { class: "anomaly" + (a.until === null || a.until === undefined ? " open" : "") });
      g.dataset.signal = a.signal;
      g.append(s("rect", { x: x0, y: m.t, width: x1 - x0, height: H - m.t - m.b, fill: color }));
      g.append(s("line", { x1: x0, x2: x0, y1: m.t, y2: H - m.b, stroke: color }));
      const lbl = s("text", { x: x0 + 3, y: H - m.b - 4 - 11 * (k % 3), fill: color });
      lbl.textContent = "⚠ " + a.signal;
      g.append(lbl);
      const title = s("title");
      const when = fmtTime(a.t, true) + (a.until ? "–" + fmtTime(a.until, true) : " – now");
      title.textContent = when + "  " + a.signal + (a.subject && a.subject !== "fleet" ? " (" + a.subject + ")" : "") +
        ": " + (a.message || "");
      g.append(title);
      svg.append(g);
    });
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const k of [1, 1.2, 1.6, 2, 2.4, 3.2, 4, 6, 8, 10]) if (k * p >= v) return k * p;
    return 10 * p;
  }

  function hover(node, ev) {
    if (!node.data || !node.scale) return;
    const { chart, start, end } = node.data;
    const { W, m } = node.geom;
    const rect = node.svg.getBoundingClientRect();
    const px = ((ev.clientX - rect.left) / rect.width) * W;
    if (px < m.l || px > W - m.r) { node.tip.hidden = true; return; }
    const t = start + ((px - m.l) / (W - m.l - m.r)) * (end - start);
    const rows = [fmtTime(t, true)];
    for (const l of chart.series) {
      const n = l.points.length;
      if (!n) continue;
      let best = null, bd = Infinity;
      const at = l.kind === "band" ? 2 : 1;
      for (const p of l.points) { const dd = Math.abs(p[0] - t); if (dd < bd) { bd = dd; best = p[at]; } }
      // near enough: a 40th of the view, or most of this line's own spacing
      const gap = n > 1 ? (l.points[n - 1][0] - l.points[0][0]) / (n - 1) : 0;
      if (bd <= Math.max((end - start) / 40, gap * 0.75)) rows.push(l.name + ": " + fmt(best, chart.unit));
    }
    for (const mk of chart.markers || []) {
      if (Math.abs(mk.t - t) < (end - start) / 60) rows.push("scaled " + mk.label + ": " + (mk.reason || ""));
    }
    for (const a of chart.anomalies || []) {
      const until = a.until === null || a.until === undefined ? node.data.now || end : a.until;
      if (t >= a.t - (end - start) / 60 && t <= until) rows.push("⚠ " + a.signal + ": " + (a.message || ""));
    }
    node.tip.textContent = rows.join("  ·  ");
    node.tip.hidden = false;
    node.tip.style.left = Math.min(rect.width - 10, (ev.clientX - rect.left) + 12) + "px";
    node.tip.style.top = "4px";
    let cursor = node.svg.querySelector(".cursor");
    if (!cursor) { cursor = s("line", { class: "cursor" }); node.svg.append(cursor); }
    for (const [k, v] of Object.entries({ x1: px, x2: px, y1: m.t, y2: node.geom.H - m.b })) cursor.setAttribute(k, v);
  }

  // ---------- data flow ----------
  // Charts are refetched at most once per query step (a 1-day view has a point every
  // 6 min), capped at MAX_SERIES_INTERVAL_S; the live numbers come with every event.
  function seriesDue(card, force) {
    if (force || card.fetchedRange !== rangeSelect.value || !card.series) return true;
    const every = Math.min(MAX_SERIES_INTERVAL_S, Math.max(card.series.step_s || 0, (last && last.interval_s) || 0));
    return Date.now() - card.fetchedAt >= every * 1000 - 250;
  }

  async function fetchSeries(card, force) {
    if (inflight.has(card.key) || !seriesDue(card, force)) return;
    inflight.add(card.key);
    try {
      const [ns, name] = card.key.split("/");
      const range = rangeSelect.value;
      const url = withToken(`api/fleets/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/series?range=${encodeURIComponent(range)}`);
      const resp = await fetch(url, { cache: "no-store" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const text = await resp.text();
      const data = JSON.parse(text);
      const began = performance.now();
      card.series = data;
      card.fetchedAt = Date.now();
      card.fetchedRange = range;
      data.start = fitStart(data);
      for (const chart of data.charts) chart.anomalies = anomaliesOf(chart, data.anomalies);
      for (const chart of data.charts) drawChart(ensureChart(card, chart), chart, data.start, data.end, data.now, data.prometheus);
      // what one refresh costs the page: measured, shown to tests and curious people
      card.root.dataset.payloadBytes = String(text.length);
      card.root.dataset.renderMs = (performance.now() - began).toFixed(1);
      card.root.dataset.seriesAt = String(data.now);
      card.root.dataset.rangeS = String(data.range_s);
    } catch (err) {
      card.root.dataset.seriesError = String(err);
    } finally {
      inflight.delete(card.key);
    }
  }

  // Start the x axis at the first sample when the data is younger than the
  // selected range (a fleet that just started), keeping at least 2 minutes.
  function fitStart(data) {
    let first = Infinity;
    for (const c of data.charts) {
      for (const l of c.series) if (l.points.length && l.points[0][0] < first) first = l.points[0][0];
    }
    if (!isFinite(first) || first <= data.start) return data.start;
    return Math.max(data.start, Math.min(first - 10, data.now - 120));
  }

  function render(payload) {
    last = payload;
    renderPrometheus(payload.prometheus);
    el("empty").hidden = payload.fleets.length > 0;
    el("empty").textContent = "No WebSocketFleet found.";
    const seen = new Set();
    for (const f of payload.fleets) {
      renderFleet(f, f.prometheus || payload.prometheus);
      seen.add(f.namespace + "/" + f.name);
    }
    for (const [key, card] of cards) {
      if (!seen.has(key)) { card.root.remove(); cards.delete(key); }
    }
    el("updated").textContent = "updated " + fmtTime(payload.generated_at, true);
    document.body.dataset.updatedAt = String(payload.generated_at);
    for (const card of cards.values()) fetchSeries(card);
  }

  function connect() {
    const es = new EventSource(withToken("api/events"));
    es.addEventListener("open", () => setPill(el("stream-status"), "live", "good", "Receiving live updates"));
    es.addEventListener("fleets", (ev) => {
      setPill(el("stream-status"), "live", "good", "Receiving live updates");
      render(JSON.parse(ev.data));
    });
    es.addEventListener("error", async () => {
      setPill(el("stream-status"), "reconnecting…", "warn", "Live updates interrupted");
      if (es.readyState === EventSource.CLOSED) {
        // EventSource gives up on HTTP errors: find out why, then retry.
        try {
          const r = await fetch(withToken("api/fleets"), { cache: "no-store" });
          if (r.status === 401) {
            setPill(el("stream-status"), "unauthorized", "bad", "Open the page with ?token=…");
            const banner = el("banner");
            banner.textContent = "Unauthorized: this dashboard needs a token (open it with ?token=…).";
            banner.hidden = false;
            return;
          }
        } catch (e) { /* server down: retry below */ }
        setTimeout(connect, 3000);
      }
    });
  }

  rangeSelect.addEventListener("change", () => { for (const c of cards.values()) fetchSeries(c, true); });
  window.addEventListener("resize", () => {
    for (const card of cards.values()) {
      if (!card.series) continue;
      for (const chart of card.series.charts) drawChart(ensureChart(card, chart), chart, card.series.start, card.series.end, card.series.now, card.series.prometheus);
    }
  });
  connect();
})();
