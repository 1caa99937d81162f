/* abacus results dashboard: the daily lift panel (templates/analysis/time_views.html). Per
   metric, each treatment arm's relative lift on each day's data with its fixed-horizon interval,
   by UTC calendar day or by day since exposure (there with the novelty check's weighted trend
   line). SVG pieces from charts.js, no library; redrawn on resize and when the refresh swaps in
   a new dashboard (dashboard.js replaces #dashboard, which holds this panel). */
(function () {
  "use strict";

  var charts = window.abacus.charts;
  var el = charts.el, title = charts.title, isNum = charts.isNum;
  var PALETTE = ["#667085", "#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#1098ad", "#f08c00"];
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  var CLIP = 1.0;  // intervals beyond +/-100% are drawn at the clip line

  function pct(x, digits) {
    if (!isNum(x)) return "—";
    var s = (x * 100).toFixed(digits === undefined ? 1 : digits) + "%";
    return (x > 0 ? "+" : "") + s.replace("-", "−");
  }

  function clip(v) { return Math.max(-CLIP, Math.min(CLIP, v)); }

  function label(axis, x) {
    if (axis === "since_exposure") return "day " + x;
    var d = new Date(x + "T00:00:00Z");
    return MONTHS[d.getUTCMonth()] + " " + d.getUTCDate();
  }

  function legend(svg, items, x0, y0) {
    var g = el("g", { "class": "legend" }, svg);
    var x = x0;
    items.forEach(function (item) {
      el("line", { x1: x, x2: x + 18, y1: y0, y2: y0, stroke: item.color, "stroke-width": item.width || 3,
        "stroke-dasharray": item.dashed ? "6 4" : "none" }, g);
      el("text", { x: x + 23, y: y0 + 4 }, g, item.label);
      x += 34 + item.label.length * 6.6;
    });
  }

  /* One metric's panel: a column per day, a dot and interval bar per treatment arm. */
  function draw(svg, metric, data, axis) {
    var W = charts.widthOf(svg, 520, 300), H = 240, left = 52, right = W - 12, top = 30, bottom = H - 26;
    charts.reset(svg, W, H);
    var series = (metric && metric[axis]) || {};
    var arms = data.variants.filter(function (v) { return (series[v] || []).length; });
    var xs = [];
    arms.forEach(function (v) {
      series[v].forEach(function (p) { if (xs.indexOf(p.x) < 0) xs.push(p.x); });
    });
    xs.sort(function (a, b) { return a < b ? -1 : a > b ? 1 : 0; });
    svg.setAttribute("data-days", xs.length);
    if (!xs.length) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "muted" }, svg,
        axis === "since_exposure" ? "No complete day since exposure yet" : "No days yet");
      return;
    }
    var values = [0], clipped = false;
    arms.forEach(function (v) {
      series[v].forEach(function (p) {
        [p.lift, p.lo, p.hi].forEach(function (z) {
          if (isNum(z)) { values.push(clip(z)); clipped = clipped || Math.abs(z) > CLIP; }
        });
      });
    });
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    var span = hi - lo || 0.02;
    var y = charts.scale(lo - span * 0.08, hi + span * 0.08, bottom, top);
    charts.valueAxis(svg, charts.niceTicks(lo - span * 0.08, hi + span * 0.08, 5), y, left, right,
      function (t) { return pct(t, 0); });
    var step = (right - left) / xs.length;
    function cx(i) { return left + step * (i + 0.5); }
    var axisG = el("g", { "class": "axis" }, svg);
    el("line", { x1: left, x2: right, y1: bottom, y2: bottom }, axisG);
    var every = Math.max(1, Math.ceil(xs.length / Math.max(2, Math.floor((right - left) / 56))));
    xs.forEach(function (x, i) {
      if (i % every && i !== xs.length - 1) return;
      el("text", { x: cx(i), y: bottom + 15, "text-anchor": "middle" }, axisG, label(axis, x));
    });
    el("line", { "class": "zero", x1: left, x2: right, y1: y(0), y2: y(0) }, svg);
    var items = [];
    arms.forEach(function (v, a) {
      var color = PALETTE[(data.variants.indexOf(v) + 1) % PALETTE.length];
      var offset = arms.length > 1 ? (a - (arms.length - 1) / 2) * Math.min(10, step / (arms.length + 1)) : 0;
      var g = el("g", { "class": "arm", "data-variant": v }, svg);
      var trend = axis === "since_exposure" ? (metric.trends || {})[v] : null;
      if (trend && isNum(trend.intercept) && isNum(trend.slope)) {
        var first = xs[0], last = xs[xs.length - 1];
        el("line", { "class": "trend-line", stroke: color,
          x1: cx(0) + offset, x2: cx(xs.length - 1) + offset,
          y1: y(clip(trend.intercept + trend.slope * first)), y2: y(clip(trend.intercept + trend.slope * last)) }, g);
      }
      series[v].forEach(function (p) {
        if (!isNum(p.lift)) return;
        var x = cx(xs.indexOf(p.x)) + offset;
        var dot = el("g", { "class": "day" + (p.partial ? " partial-day" : ""), "data-x": p.x }, g);
        var bounded = isNum(p.lo) && isNum(p.hi);
        if (bounded) {
          el("line", { x1: x, x2: x, y1: y(clip(p.lo)), y2: y(clip(p.hi)), stroke: color, "stroke-width": 3,
            "stroke-linecap": "round", opacity: 0.55 }, dot);
        }
        el("circle", { cx: x, cy: y(clip(p.lift)), r: 3.5, fill: p.partial ? "#fff" : color, stroke: color,
          "stroke-width": 1.5 }, dot);
        title(dot, v + ", " + label(axis, p.x) + (p.partial ? " (partial day)" : "") + ": " + pct(p.lift, 2) +
          (bounded ? " [" + pct(p.lo, 2) + ", " + pct(p.hi, 2) + "]" : " (no interval)") +
          "; units " + p.cn + " control, " + p.tn + " " + v);
      });
      items.push({ color: color, label: v + " lift" });
      if (trend && isNum(trend.slope)) items.push({ color: color, label: "trend", dashed: true, width: 1.6 });
    });
    if (clipped) items.push({ color: "#999", label: "clipped at \u00b1" + pct(CLIP, 0) });
    legend(svg, items, left, 12);
  }

  function currentAxis() {
    var checked = document.querySelector("#time-axis input[name=time-axis]:checked");
    return checked ? checked.value : "calendar";
  }

  function drawAll() {
    var node = document.getElementById("time-views-data");
    if (!node) return;
    var data = JSON.parse(node.textContent);
    var axis = currentAxis();
    var panel = document.getElementById("time-views");
    if (panel) panel.setAttribute("data-axis", axis);
    document.querySelectorAll("[data-daily-chart]").forEach(function (fig) {
      draw(fig.querySelector("svg"), data.metrics[fig.getAttribute("data-daily-chart")], data, axis);
    });
  }

  function bind() {
    document.querySelectorAll("#time-axis input[name=time-axis]").forEach(function (input) {
      input.addEventListener("change", drawAll);
    });
    drawAll();
  }

  function watchSwaps() {
    var dashboard = document.getElementById("dashboard");
    if (!dashboard || !dashboard.parentNode || !window.MutationObserver) return;
    new MutationObserver(function (changes) {
      var swapped = changes.some(function (c) {
        return Array.prototype.some.call(c.addedNodes, function (n) { return n.id === "dashboard"; });
      });
      if (swapped) bind();
    }).observe(dashboard.parentNode, { childList: true });
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(drawAll, 150);
  });

  function init() { bind(); watchSwaps(); }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
