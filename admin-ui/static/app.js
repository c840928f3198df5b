// Ferry admin: live-status indicator, action results, and the history charts (uPlot).
// The pages are server-rendered; htmx's SSE extension swaps in the fragments the server sends.
(function () {
  "use strict";

  // Show every action reply, including 403/404/502: they carry the explanation.
  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "...", swap: true, error: false },
  ];

  function setStatus(state, label) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.dataset.state = state;
    el.querySelector(".label").textContent = label;
  }
  document.addEventListener("htmx:sseOpen", function () { setStatus("live", "live"); });
  document.addEventListener("htmx:sseError", function () { setStatus("down", "reconnecting"); });

  var charts = {};
  window.ferryCharts = charts;

  function cssVar(name, fallback) {
    var v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  function fmtNum(v) {
    if (v == null) return "–";
    if (Math.abs(v) >= 100) return Math.round(v).toLocaleString("en-US");
    return (Math.round(v * 10) / 10).toLocaleString("en-US");
  }

  // `series`: [{label, field, color}]; the data columns are `t` and each series' field.
  function makeChart(el, series, data) {
    var opts = {
      width: Math.max(el.clientWidth, 200),
      height: 180,
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max, 1) * 1.1]; } } },
      axes: [
        { stroke: cssVar("--muted", "#667"), grid: { stroke: cssVar("--grid", "#eee") } },
        { stroke: cssVar("--muted", "#667"), grid: { stroke: cssVar("--grid", "#eee") },
          size: 60, values: function (u, vals) { return vals.map(fmtNum); } },
      ],
      series: [{}].concat(series.map(function (s, i) {
        return { label: s.label, stroke: s.color, width: 2, fill: i === 0 ? s.color + "22" : undefined,
          spanGaps: true, value: function (u, v) { return fmtNum(v); } };
      })),
    };
    return new uPlot(opts, data, el);
  }

  var seriesOf = {};

  function columns(h, series) {
    var t = h.t || [];
    return [t].concat(series.map(function (s) { return h[s.field] || t.map(function () { return null; }); }));
  }

  function update(h) {
    if (charts.rate) charts.rate.setData(columns(h, seriesOf.rate));
    if (charts.depth) charts.depth.setData(columns(h, seriesOf.depth));
    var box = document.getElementById("charts");
    if (box) box.dataset.points = String((h.t || []).length);
  }

  function initCharts() {
    var box = document.getElementById("charts");
    if (!box || typeof uPlot === "undefined") return;
    var h = {};
    try { h = JSON.parse(document.getElementById("chart-data").textContent || "{}"); } catch (e) { h = {}; }
    // Redeliveries next to deliveries, so a channel stuck redelivering stands out.
    seriesOf.rate = [
      { label: box.dataset.rateLabel || "msg/s", field: "rate", color: cssVar("--accent", "#2563eb") },
      { label: "requeued/s", field: "requeue_rate", color: cssVar("--warn", "#d97706") },
      { label: "timed out/s", field: "timeout_rate", color: cssVar("--bad", "#dc2626") },
    ];
    seriesOf.depth = [
      { label: box.dataset.depthLabel || "depth", field: "depth", color: cssVar("--warn", "#d97706") },
    ];
    charts.rate = makeChart(document.getElementById("chart-rate"), seriesOf.rate, columns(h, seriesOf.rate));
    charts.depth = makeChart(document.getElementById("chart-depth"), seriesOf.depth, columns(h, seriesOf.depth));
    box.dataset.points = String((h.t || []).length);
    var resize = function () {
      ["rate", "depth"].forEach(function (k) {
        var el = document.getElementById("chart-" + k);
        if (charts[k] && el) charts[k].setSize({ width: Math.max(el.clientWidth, 200), height: 180 });
      });
    };
    if (typeof ResizeObserver !== "undefined") new ResizeObserver(resize).observe(box);
  }

  // History arrives as JSON on the "history" event: feed the charts, do not swap it in.
  document.addEventListener("htmx:sseBeforeMessage", function (evt) {
    if (evt.detail && evt.detail.type === "history") {
      evt.preventDefault();
      try { update(JSON.parse(evt.detail.data)); } catch (e) { /* keep the last good chart */ }
    }
  });

  // A datetime-local value has no time zone: send brokers the instant the operator means,
  // as RFC 3339 in UTC (`to`), computed with the browser's zone rules for that date.
  document.addEventListener("htmx:configRequest", function (evt) {
    var p = evt.detail.parameters;
    if (!p || !p.at) return;
    var at = new Date(p.at);
    if (!isNaN(at.getTime())) p.to = at.toISOString();
    delete p.at;
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", initCharts);
  } else {
    initCharts();
  }
})();
