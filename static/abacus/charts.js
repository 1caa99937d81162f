/* abacus: the SVG chart pieces the results dashboard (dashboard.js) and the release page
 * (releases.js) share: elements, sizing, linear scales, round tick values and a value axis. No
 * library, nothing from outside the app. Loaded before the page script (no inline scripts: the
 * CSP), it puts them on window.abacus.charts.
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";

  function isNum(x) { return typeof x === "number" && isFinite(x); }

  function el(name, attrs, parent, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  /* The tooltip of a drawn node. */
  function title(node, text) { el("title", {}, node, text); return node; }

  /* The width to draw at: the chart's box, `fallback` while it has none, never below `least`. */
  function widthOf(svg, fallback, least) {
    var w = svg.parentNode ? svg.parentNode.clientWidth : 0;
    return Math.max(least, Math.round(w || fallback));
  }

  function reset(svg, width, height) {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
  }

  /* The linear map of [d0, d1] onto [r0, r1]. */
  function scale(d0, d1, r0, r1) {
    var span = d1 - d0 || 1;
    return function (v) { return r0 + ((v - d0) / span) * (r1 - r0); };
  }

  /* About n round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) from lo to hi. */
  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    var raw = (hi - lo) / Math.max(1, n);
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; })
      .find(function (s) { return s >= raw; }) || 10 * mag;
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return out;
  }

  /* A grid line and a label (written by `format`) at each tick, labels left of `left`. */
  function valueAxis(g, ticks, y, left, right, format) {
    var axis = el("g", { "class": "axis" }, g);
    ticks.forEach(function (t) {
      el("line", { "class": "grid-line", x1: left, x2: right, y1: y(t), y2: y(t) }, axis);
      el("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end" }, axis, format(t));
    });
  }

  var abacus = window.abacus = window.abacus || {};
  abacus.charts = {
    isNum: isNum, el: el, title: title, widthOf: widthOf, reset: reset, scale: scale,
    niceTicks: niceTicks, valueAxis: valueAxis,
  };
})();
