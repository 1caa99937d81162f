/* abacus: behaviour of the release pages (no inline scripts: the CSP forbids them). Every page
 * works without it; this file adds:
 *
 * - the new-release form: the chosen flag's variations in the variation and baseline selects,
 *   the environment's default named as the baseline's default, the kind's default steps (a
 *   blue-green release is one 100% step: the verification window), the steps' numbers;
 * - the release page: each action asks on the page before it submits (the server asks
 *   otherwise); one SVG chart per metric and one of units per side, drawn from the page's JSON
 *   (no library, nothing from outside the app); every 15 s while the release is live the data
 *   is fetched again and the charts, the decision and the latest check are redrawn; when the
 *   release moved (status, step, a transition) the page reloads, unless you are confirming an
 *   action.
 * The confirm step is confirm.js's, the chart pieces charts.js's: both load before this file.
 */
(function () {
  "use strict";

  var charts = window.abacus.charts;
  var el = charts.el, title = charts.title, isNum = charts.isNum, niceTicks = charts.niceTicks;
  var reset = charts.reset, scale = charts.scale;
  var REFRESH_MS = 15000;
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $$(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  function readJSON(id) {
    var node = document.getElementById(id);
    if (!node) { return null; }
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  }

  // ==== the new-release form ===================================================================

  function setOptions(select, options, value) {
    select.textContent = "";
    options.forEach(function (o) {
      var option = document.createElement("option");
      option.value = o[0];
      option.textContent = o[1];
      select.appendChild(option);
    });
    var values = options.map(function (o) { return o[0]; });
    select.value = values.indexOf(value) >= 0 ? value : "";
  }

  function stepRows() {
    return $$('table[data-formset="steps"] tbody tr.formset-row').filter(function (r) { return !r.hidden; });
  }

  function renumberSteps() {
    stepRows().forEach(function (row, i) {
      var cell = $(".step-number", row);
      if (cell) { cell.textContent = String(i + 1); }
    });
  }

  function setSteps(steps) {
    var body = $('table[data-formset="steps"] tbody');
    var total = $("#id_steps-TOTAL_FORMS");
    var initial = $("#id_steps-INITIAL_FORMS");
    var template = $("#steps-template");
    if (!body || !total || !template) { return; }
    body.textContent = "";
    steps.forEach(function (step, i) {
      body.insertAdjacentHTML("beforeend", template.innerHTML.replace(/__prefix__/g, String(i)));
      var row = body.lastElementChild;
      $('input[name$="-percent"]', row).value = String(step.percent);
      $('input[name$="-min_minutes"]', row).value = String(step.min_minutes);
      $('input[name$="-min_units"]', row).value = String(step.min_units);
    });
    total.value = String(steps.length);
    if (initial) { initial.value = "0"; }
    renumberSteps();
  }

  function initForm() {
    var form = $("#release-form");
    var data = readJSON("release-form-data");
    if (!form || !data) { return; }
    var flagSelect = $("#id_flag");
    var envSelect = $("#id_environment");
    var variation = $("#id_variation");
    var baseline = $("#id_baseline_variation");
    var kind = $("#id_kind");
    var note = $("#flag-state");

    function flagChanged() {
      var flag = data.flags[flagSelect.value];
      var env = envSelect.value;
      var keys = flag ? flag.variations : [];
      var pairs = keys.map(function (k) { return [k, k]; });
      var fallback = flag ? flag.off_variation : "";
      var current = flag && Object.prototype.hasOwnProperty.call(flag.defaults, env) ? flag.defaults[env] : fallback;
      var chosen = variation.value;
      if (!chosen && keys.length === 2) {  // a boolean-like flag: the other one is the new one
        chosen = keys[0] === current ? keys[1] : keys[0];
      }
      setOptions(variation, [["", "choose a variation"]].concat(pairs), chosen);
      var label = current ? "the environment's default (" + current + ")" : "the environment's default";
      setOptions(baseline, [["", label]].concat(pairs), baseline.value);
      if (!note) { return; }
      if (!flag) { note.textContent = ""; return; }
      var envName = envSelect.options[envSelect.selectedIndex] ? envSelect.options[envSelect.selectedIndex].text : env;
      note.textContent = flag.enabled[env]
        ? flagSelect.value + " is on in " + envName + ", serving " + current + " by default."
        : flagSelect.value + " is off in " + envName + ": turn it on (serving the baseline) before a release.";
      note.classList.toggle("field-error", !flag.enabled[env]);
    }

    function kindChanged(resetRows) {
      $$(".kind-help").forEach(function (p) { p.hidden = p.getAttribute("data-kind") !== kind.value; });
      var tools = $("#add-step");
      if (tools) { tools.hidden = kind.value === "blue_green"; }
      if (resetRows) { setSteps(data.kind_steps[kind.value] || []); }
    }

    flagSelect.addEventListener("change", flagChanged);
    envSelect.addEventListener("change", flagChanged);
    kind.addEventListener("change", function () { kindChanged(true); });
    var reset = $("#reset-steps");
    if (reset) { reset.addEventListener("click", function () { setSteps(data.kind_steps[kind.value] || []); }); }
    document.addEventListener("click", function (event) {
      if (event.target.closest("[data-add-row], [data-remove-row]")) { window.setTimeout(renumberSteps, 0); }
    });
    flagChanged();
    kindChanged(false);
    renumberSteps();
  }

  // ==== the release page: charts ================================================================

  function widthOf(svg) { return charts.widthOf(svg, 640, 320); }

  function fmt(x) {
    if (!isNum(x)) { return "—"; }
    var a = Math.abs(x);
    if (a >= 1e6) { return (x / 1e6).toPrecision(3).replace(/\.?0+$/, "") + "M"; }
    if (a >= 1e4) { return (x / 1e3).toPrecision(3).replace(/\.?0+$/, "") + "k"; }
    if (a === 0) { return "0"; }
    return String(Number(x.toPrecision(3)));
  }

  function sig(x) { return isNum(x) ? String(Number(x.toPrecision(4))) : "—"; }

  function signedPct(x) { return isNum(x) ? (x >= 0 ? "+" : "") + (x * 100).toFixed(1) + "%" : "—"; }

  function domain(values, includeZero) {
    var xs = values.filter(isNum);
    if (includeZero) { xs.push(0); }
    if (!xs.length) { return [0, 1]; }
    var lo = Math.min.apply(null, xs), hi = Math.max.apply(null, xs);
    var span = hi - lo || Math.abs(hi) || 1;
    return [lo - span * 0.08, hi + span * 0.08];
  }

  function ms(iso) { return iso ? Date.parse(iso) : NaN; }

  function timeLabel(t, span) {
    var d = new Date(t);
    var hm = String(d.getUTCHours()).padStart(2, "0") + ":" + String(d.getUTCMinutes()).padStart(2, "0");
    var day = MONTHS[d.getUTCMonth()] + " " + d.getUTCDate();
    if (span > 3 * 86400e3) { return day; }
    if (span > 12 * 3600e3) { return day + " " + hm; }
    if (span > 15 * 60e3) { return hm; }
    return hm + ":" + String(d.getUTCSeconds()).padStart(2, "0");
  }

  /* The x range: from the first step's start (or first check) to the last check, or now while
     the release is live. */
  function timeRange(data) {
    var times = data.checks.map(function (c) { return ms(c.at); });
    data.steps.forEach(function (s) { if (isNum(ms(s.started_at))) { times.push(ms(s.started_at)); } });
    if (data.release.live) { times.push(Date.now()); }
    if (isNum(ms(data.release.finished_at))) { times.push(ms(data.release.finished_at)); }
    times = times.filter(isNum);
    if (!times.length) { var now = Date.now(); return [now - 60e3, now]; }
    var t0 = Math.min.apply(null, times), t1 = Math.max.apply(null, times);
    if (t1 - t0 < 60e3) { t1 = t0 + 60e3; }
    return [t0, t1];
  }

  function timeAxis(g, range, x, y0) {
    var axis = el("g", { "class": "axis" }, g);
    el("line", { x1: x(range[0]), x2: x(range[1]), y1: y0, y2: y0 }, axis);
    var n = 5, span = range[1] - range[0];
    for (var i = 0; i <= n; i++) {
      var t = range[0] + (span * i) / n;
      el("line", { x1: x(t), x2: x(t), y1: y0, y2: y0 + 4 }, axis);
      el("text", { x: x(t), y: y0 + 16, "text-anchor": i === 0 ? "start" : i === n ? "end" : "middle" }, axis, timeLabel(t, span));
    }
  }

  function valueAxis(g, dom, y, left, right, count) {
    var ticks = niceTicks(dom[0], dom[1], count).filter(function (t) { return t >= dom[0] && t <= dom[1]; });
    charts.valueAxis(g, ticks, y, left, right, fmt);
  }

  /* Step boundaries: a dotted line where each step started, labelled with its percent. */
  function stepLines(g, data, x, range, top, bottom) {
    var lastLabel = -Infinity, row = 0;
    data.steps.forEach(function (s) {
      var t = ms(s.started_at);
      if (!isNum(t) || t < range[0] || t > range[1]) { return; }
      el("line", { "class": "step-line", x1: x(t), x2: x(t), y1: top, y2: bottom }, g);
      row = x(t) - lastLabel < 34 ? (row + 1) % 2 : 0;  // labels of close steps take turns
      lastLabel = x(t);
      title(el("text", { "class": "step-label", x: x(t) + 3, y: top + 9 + row * 11 }, g, s.percent + "%"),
        "Step " + (s.index + 1) + " (" + s.percent + "%) started " + new Date(t).toISOString().slice(0, 19).replace("T", " ") + " UTC");
    });
  }

  /* Consecutive checks of the same step: lines never join two steps (each step has its own
     window of units, so values jump at a boundary). */
  function byStep(points) {
    var groups = [], current = null;
    points.forEach(function (p) {
      if (!current || current.step !== p.step) { current = { step: p.step, points: [] }; groups.push(current); }
      current.points.push(p);
    });
    return groups;
  }

  function pathOf(points, x, y, key) {
    var d = "";
    points.forEach(function (p) {
      if (!isNum(p[key])) { return; }
      d += (d ? " L " : "M ") + x(p.t).toFixed(1) + " " + y(p[key]).toFixed(1);
    });
    return d;
  }

  function series(g, groups, x, y, key, cls, dots) {
    groups.forEach(function (group) {
      var d = pathOf(group.points, x, y, key);
      if (d) { el("path", { "class": "line " + cls, d: d }, g); }
      if (!dots) { return; }
      group.points.forEach(function (p) {
        if (isNum(p[key])) { el("circle", { "class": "dot " + cls, cx: x(p.t), cy: y(p[key]), r: 2.5 }, g); }
      });
    });
  }

  function legend(svg, items, x0, y0) {
    var g = el("g", { "class": "legend" }, svg);
    var x = x0;
    items.forEach(function (item) {
      if (item.band) {
        el("rect", { "class": "swatch-band", x: x, y: y0 - 5, width: 18, height: 10 }, g);
      } else {
        el("line", { "class": item.cls, x1: x, x2: x + 18, y1: y0, y2: y0 }, g);
      }
      el("text", { x: x + 23, y: y0 + 4 }, g, item.label);
      x += 34 + item.label.length * 6.2;
    });
  }

  function metricPoints(data, key) {
    return data.checks.map(function (c) {
      var row = (c.metrics || {})[key] || {};
      return {
        t: ms(c.at), step: c.step, percent: c.percent, action: c.action, status: row.status,
        baseline: row.baseline, "new": row["new"], difference: row.difference,
        lower: row.lower, upper: row.upper, tolerated: row.tolerated, harmed: !!row.harmed,
        relative: row.relative, note: row.note || "",
      };
    }).filter(function (p) { return isNum(p.t); });
  }

  /* One metric: the two sides' values (top) and the difference with its deciding interval, the
     tolerated harm and the harmed checks (bottom), over time, steps marked. */
  function drawMetric(svg, metric, data) {
    var W = widthOf(svg), H = 318, left = 64, right = W - 14;
    var top1 = 40, bottom1 = 136, top2 = 158, bottom2 = 268;
    reset(svg, W, H);
    var range = timeRange(data);
    var x = scale(range[0], range[1], left, right);
    var points = metricPoints(data, metric.key);
    var groups = byStep(points);
    var sign = metric.direction === "decrease" ? 1 : -1;  // the harmful side of the difference
    points.forEach(function (p) { p.limit = isNum(p.tolerated) ? sign * p.tolerated : null; });
    var dots = points.length <= 120;

    stepLines(svg, data, x, range, 4, bottom2);
    el("text", { "class": "panel-title", x: left - 60, y: top1 - 8 }, svg, "value per side");
    el("text", { "class": "panel-title", x: left - 60, y: top2 - 8 }, svg, "difference (new − baseline)");

    var dom1 = domain(points.map(function (p) { return p.baseline; }).concat(points.map(function (p) { return p["new"]; })), false);
    var y1 = scale(dom1[0], dom1[1], bottom1, top1);
    valueAxis(svg, dom1, y1, left, right, 3);
    var g1 = el("g", {}, svg);
    series(g1, groups, x, y1, "baseline", "baseline", dots);
    series(g1, groups, x, y1, "new", "new", dots);

    var values2 = [];
    points.forEach(function (p) { values2.push(p.difference, p.lower, p.upper, p.limit); });
    var dom2 = domain(values2, true);
    var y2 = scale(dom2[0], dom2[1], bottom2, top2);
    valueAxis(svg, dom2, y2, left, right, 3);
    el("line", { "class": "zero", x1: left, x2: right, y1: y2(0), y2: y2(0) }, svg);
    el("text", { "class": "worse", x: right, y: sign > 0 ? top2 + 10 : bottom2 - 4, "text-anchor": "end" }, svg,
      (sign > 0 ? "↑" : "↓") + " worse");
    var g2 = el("g", {}, svg);
    groups.forEach(function (group) {
      var pts = group.points.filter(function (p) { return isNum(p.lower) && isNum(p.upper); });
      if (pts.length === 1) {
        el("line", { "class": "band-line", x1: x(pts[0].t), x2: x(pts[0].t), y1: y2(pts[0].lower), y2: y2(pts[0].upper) }, g2);
      } else if (pts.length > 1) {
        var d = pathOf(pts, x, y2, "upper") + " L " + pts.slice().reverse().map(function (p) {
          return x(p.t).toFixed(1) + " " + y2(p.lower).toFixed(1);
        }).join(" L ") + " Z";
        el("path", { "class": "band", d: d }, g2);
      }
      var limit = pathOf(group.points, x, y2, "limit");
      if (limit) { el("path", { "class": "tolerated", d: limit }, g2); }
    });
    series(g2, groups, x, y2, "difference", "difference", dots);
    points.forEach(function (p) {
      if (!p.harmed || !isNum(p.difference)) { return; }
      title(el("circle", { "class": "harm", cx: x(p.t), cy: y2(p.difference), r: 5, "data-harm": "1" }, g2),
        "Harm at " + p.percent + "%: difference " + sig(p.difference) + " [" + sig(p.lower) + ", " + sig(p.upper) +
        "], tolerated " + sig(p.tolerated));
    });
    if (!points.length) {
      el("text", { "class": "panel-title", x: (left + right) / 2, y: (top1 + bottom2) / 2, "text-anchor": "middle" }, svg, "no checks yet");
    }
    timeAxis(svg, range, x, bottom2);
    legend(svg, [
      { cls: "line new", label: "new (" + data.release.variation + ")" },
      { cls: "line baseline", label: "baseline (" + data.release.baseline_variation + ")" },
      { cls: "line difference", label: "difference" },
      { band: true, label: "deciding interval" },
      { cls: "tolerated", label: "tolerated" },
    ], left, H - 12);
  }

  /* Units per side in each step (they start again at each step), with the step's minimum. */
  function drawUnits(svg, data) {
    var W = widthOf(svg), H = 200, left = 64, right = W - 14, top = 30, bottom = 150;
    reset(svg, W, H);
    var range = timeRange(data);
    var x = scale(range[0], range[1], left, right);
    var points = data.checks.map(function (c) {
      var u = c.units || {};
      return { t: ms(c.at), step: c.step, baseline: u.baseline, "new": u["new"] };
    }).filter(function (p) { return isNum(p.t); });
    var mins = data.steps.map(function (s) { return s.min_units; });
    var values = points.map(function (p) { return p.baseline; }).concat(points.map(function (p) { return p["new"]; }));
    var dom = domain(values.concat(mins.filter(function (m, i) { return data.steps[i].started_at; })), true);
    dom[0] = 0;
    var y = scale(dom[0], dom[1], bottom, top);
    stepLines(svg, data, x, range, 4, bottom);
    valueAxis(svg, dom, y, left, right, 3);
    data.steps.forEach(function (s, i) {
      var t0 = ms(s.started_at);
      if (!isNum(t0) || !s.min_units) { return; }
      var next = data.steps[i + 1];
      var t1 = ms(s.ended_at) || (next && ms(next.started_at)) || range[1];
      el("path", { "class": "minimum", d: "M " + x(t0).toFixed(1) + " " + y(s.min_units).toFixed(1) + " L " + x(t1).toFixed(1) + " " + y(s.min_units).toFixed(1) }, svg);
    });
    var groups = byStep(points);
    var dots = points.length <= 120;
    series(svg, groups, x, y, "baseline", "baseline", dots);
    series(svg, groups, x, y, "new", "new", dots);
    timeAxis(svg, range, x, bottom);
    legend(svg, [
      { cls: "line new", label: "new (" + data.release.variation + ")" },
      { cls: "line baseline", label: "baseline (" + data.release.baseline_variation + ")" },
      { cls: "minimum", label: "step's minimum" },
    ], left, H - 12);
  }

  function drawAll(data) {
    data.metrics.forEach(function (metric) {
      var figure = $('[data-chart="metric"][data-metric="' + metric.key + '"]');
      if (figure) { drawMetric($("svg", figure), metric, data); }
    });
    var units = $('[data-chart="units"] svg');
    if (units) { drawUnits(units, data); }
  }

  // ==== the release page: the decision and the latest check, redrawn ============================

  function listInto(ul, items) {
    ul.textContent = "";
    items.forEach(function (text) {
      var li = document.createElement("li");
      li.textContent = text;
      ul.appendChild(li);
    });
  }

  function showDecision(data) {
    var d = data.decision;
    var card = $("#decision");
    if (!card) { return; }
    card.className = "card decision-card decision-" + (d.action || "none") + " state-" + data.release.status;
    $("#decision-headline").textContent = d.headline;
    $("#decision-action").textContent = d.action ? "latest decision: " + d.action_words : "";
    listInto($("#decision-reasons"), d.reasons || []);
    var waits = $("#decision-waits");
    listInto($("ul", waits), d.waits_for || []);
    waits.hidden = !(d.waits_for && d.waits_for.length && data.release.live);
    $("#decision-when").textContent = d.when;
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function showLatest(data) {
    var body = $("#latest-table tbody");
    if (!body || !data.checks.length) { return; }
    var last = data.checks[data.checks.length - 1];
    var labels = {};
    data.metrics.forEach(function (m) { labels[m.key] = m.label; });
    body.textContent = "";
    Object.keys(last.metrics).forEach(function (key) {
      var row = last.metrics[key];
      var tr = document.createElement("tr");
      tr.className = "check-" + row.status;
      tr.setAttribute("data-metric", key);
      cell(tr, labels[key] || key);
      cell(tr, sig(row.baseline), "num");
      cell(tr, sig(row["new"]), "num");
      cell(tr, sig(row.difference) + (isNum(row.relative) ? " (" + signedPct(row.relative) + ")" : ""), "num");
      cell(tr, isNum(row.lower) ? "[" + sig(row.lower) + ", " + sig(row.upper) + "]" : "—", "num");
      cell(tr, sig(row.tolerated), "num");
      var status = cell(tr, "");
      var pill = document.createElement("span");
      pill.className = "status-pill pill-" + row.status;
      pill.textContent = row.status;
      status.appendChild(pill);
      if (row.note) { status.appendChild(document.createTextNode(" " + row.note)); }
      body.appendChild(tr);
    });
    $("#latest-when").textContent = data.latest_when;
    var none = $("#no-checks");
    if (none) { none.hidden = true; }
  }

  function initRelease() {
    var head = $("#release-head");
    var data = readJSON("release-data");
    if (!head || !data) { return; }
    var state = { data: data };
    drawAll(data);
    var resized;
    window.addEventListener("resize", function () {
      window.clearTimeout(resized);
      resized = window.setTimeout(function () { drawAll(state.data); }, 150);
    });
    if (head.getAttribute("data-live") !== "1") { return; }
    var note = $("#refresh-note");
    var timer = window.setInterval(function () {
      fetch(head.getAttribute("data-url"), { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
        .then(function (response) { if (!response.ok) { throw new Error(String(response.status)); } return response.json(); })
        .then(function (next) {
          var before = state.data.release;
          var moved = next.release.status !== before.status || next.release.step !== before.step ||
            next.release.transitions !== before.transitions;
          state.data = next;
          drawAll(next);
          showDecision(next);
          showLatest(next);
          if (note) { note.classList.remove("failed"); note.textContent = "Refreshed at " + new Date().toISOString().slice(11, 19) + " UTC; again in 15 seconds while the release is live."; }
          if (!moved) { return; }
          if (!window.abacus.confirm.isOpen()) { window.location.reload(); return; }
          if (note) { note.textContent = "The release moved (" + next.release.status_label + "): reload the page to see its steps."; }
          window.clearInterval(timer);
        })
        .catch(function () {
          if (note) { note.classList.add("failed"); note.textContent = "Could not refresh; trying again in 15 seconds."; }
        });
    }, REFRESH_MS);
  }

  function init() {
    initForm();
    window.abacus.confirm.init({ oneAtATime: true });
    initRelease();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
