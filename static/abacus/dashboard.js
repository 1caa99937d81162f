/* abacus results dashboard: draws the charts as SVG from the page's embedded data, switches the
   table between its views, and runs "Refresh analysis" (queue a run, show progress, swap in the
   new snapshot). No libraries, nothing loaded from outside the app; the chart pieces it shares
   with the release page are charts.js's, loaded before this file. */
(function () {
  "use strict";

  var charts = window.abacus.charts;
  var el = charts.el, title = charts.title, isNum = charts.isNum, niceTicks = charts.niceTicks;
  var reset = charts.reset, scale = charts.scale, valueAxis = charts.valueAxis;
  var PALETTE = ["#667085", "#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#1098ad", "#f08c00"];
  var STATUS = { improved: "#12805c", harmed: "#c92a2a", non_inferior: "#1c6fd1", neutral: "#667085" };
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  // --- small helpers ----------------------------------------------------------------------------

  function widthOf(svg, fallback) { return charts.widthOf(svg, fallback, 300); }

  function pct(x, digits) {
    if (!isNum(x)) return "—";
    var s = (x * 100).toFixed(digits === undefined ? 1 : digits) + "%";
    return (x > 0 ? "+" : "") + s.replace("-", "−");
  }

  function count(x) { return isNum(x) ? Math.round(x).toLocaleString("en-US") : "—"; }

  function pad(lo, hi, frac) {
    var span = hi - lo || Math.abs(hi) || 0.01;
    return [lo - span * frac, hi + span * frac];
  }

  function timeLabel(ms, spanMs) {
    var d = new Date(ms);
    var day = MONTHS[d.getUTCMonth()] + " " + d.getUTCDate();
    var hm = String(d.getUTCHours()).padStart(2, "0") + ":" + String(d.getUTCMinutes()).padStart(2, "0");
    if (spanMs > 3 * 86400e3) return day;
    if (spanMs > 6 * 3600e3) return day + " " + hm;
    if (spanMs > 10 * 60e3) return hm;
    return hm + ":" + String(d.getUTCSeconds()).padStart(2, "0");
  }

  function variantColor(data, key) {
    var i = data.variants.findIndex(function (v) { return v.key === key; });
    return PALETTE[(i < 0 ? data.variants.length : i) % PALETTE.length];
  }

  function timeAxis(g, xs, x, y0, left, right) {
    var span = xs[xs.length - 1] - xs[0];
    var n = Math.min(6, xs.length);
    var ticks = [];
    if (span <= 0) ticks = [xs[0]];
    else for (var i = 0; i < n; i++) ticks.push(xs[0] + (span * i) / Math.max(1, n - 1));
    var axis = el("g", { "class": "axis" }, g);
    el("line", { x1: left, x2: right, y1: y0, y2: y0 }, axis);
    ticks.forEach(function (t, i) {
      var anchor = ticks.length === 1 ? "middle" : i === 0 ? "start" : i === ticks.length - 1 ? "end" : "middle";
      el("line", { x1: x(t), x2: x(t), y1: y0, y2: y0 + 4 }, axis);
      el("text", { x: x(t), y: y0 + 16, "text-anchor": anchor }, axis, timeLabel(t, span));
    });
  }

  function legend(svg, items, x0, y0) {
    var g = el("g", { "class": "legend" }, svg);
    var x = x0;
    items.forEach(function (item) {
      el("line", { x1: x, x2: x + 18, y1: y0, y2: y0, stroke: item.color, "stroke-width": 3,
        "stroke-dasharray": item.dashed ? "5 3" : "none" }, g);
      var t = el("text", { x: x + 23, y: y0 + 4 }, g, item.label);
      x += 34 + item.label.length * 6.6;
      return t;
    });
  }

  // --- charts -----------------------------------------------------------------------------------

  function intervalOf(arm, view) {
    var pair = arm[view] || [null, null];
    return isNum(pair[0]) && isNum(pair[1]) ? pair : null;
  }

  /* One metric: per treatment arm, the relative lift with the interval of the chosen view,
     against zero and (guardrails) the non-inferiority margin on the harmful side. */
  function drawInterval(svg, metric, view) {
    var W = widthOf(svg, 520), rowH = 34, top = 14, axisH = 24;
    var H = top + rowH * Math.max(1, metric.arms.length) + axisH;
    var left = 84, right = W - 150;
    reset(svg, W, H);
    var harmSign = metric.direction === "decrease" ? 1 : -1;
    var marginAt = isNum(metric.margin) ? harmSign * metric.margin : null;
    var values = [0];
    if (marginAt !== null) values.push(marginAt);
    metric.arms.forEach(function (a) {
      var iv = intervalOf(a, view);
      if (iv) values.push(iv[0], iv[1]);
      if (isNum(a.lift_rel)) values.push(a.lift_rel);
    });
    var dom = pad(Math.min.apply(null, values), Math.max.apply(null, values), 0.08);
    var x = scale(dom[0], dom[1], left, right);
    var bottom = top + rowH * Math.max(1, metric.arms.length);
    if (marginAt !== null) {
      var edge = harmSign < 0 ? left : right;
      var zone = el("rect", { "class": "harm-zone", x: Math.min(edge, x(marginAt)), y: top,
        width: Math.abs(x(marginAt) - edge), height: bottom - top }, svg);
      title(zone, "Beyond the non-inferiority margin (" + pct(marginAt) + ")");
    }
    var ticks = niceTicks(dom[0], dom[1], 5);
    var axis = el("g", { "class": "axis" }, svg);
    el("line", { x1: left, x2: right, y1: bottom, y2: bottom }, axis);
    ticks.forEach(function (t) {
      el("line", { x1: x(t), x2: x(t), y1: bottom, y2: bottom + 4 }, axis);
      el("text", { x: x(t), y: bottom + 16, "text-anchor": "middle" }, axis, pct(t, 0));
    });
    el("line", { "class": "zero", x1: x(0), x2: x(0), y1: top - 4, y2: bottom }, svg);
    if (marginAt !== null) {
      el("line", { "class": "margin-line", x1: x(marginAt), x2: x(marginAt), y1: top - 4, y2: bottom }, svg);
      el("text", { x: x(marginAt), y: top + 2, "text-anchor": harmSign < 0 ? "start" : "end",
        dx: harmSign < 0 ? 3 : -3, "class": "muted" }, svg, "margin " + pct(marginAt, 0));
    }
    if (!metric.arms.length) {
      el("text", { x: left, y: top + rowH / 2, "class": "muted" }, svg, "no treatment arm");
    }
    metric.arms.forEach(function (a, i) {
      var cy = top + rowH * i + rowH / 2;
      var color = STATUS[a.status] || STATUS.neutral;
      var g = el("g", { "class": "arm", "data-variant": a.variant }, svg);
      el("text", { x: left - 10, y: cy + 4, "text-anchor": "end" }, g, a.variant);
      var iv = intervalOf(a, view);
      if (iv) {
        var bar = el("line", { x1: x(iv[0]), x2: x(iv[1]), y1: cy, y2: cy, stroke: color,
          "stroke-width": 7, "stroke-linecap": "round", opacity: 0.75 }, g);
        title(bar, a.variant + ": " + pct(iv[0], 2) + " to " + pct(iv[1], 2));
      }
      if (isNum(a.lift_rel)) {
        el("circle", { cx: x(a.lift_rel), cy: cy, r: 5, fill: "#fff", stroke: color, "stroke-width": 2.5 }, g);
      }
      var label = !isNum(a.lift_rel) ? "no data yet" : pct(a.lift_rel, 1) +
        (iv ? "  [" + pct(iv[0], 1) + ", " + pct(iv[1], 1) + "]" : "  (no interval yet)");
      el("text", { x: right + 12, y: cy + 4 }, g, label);
    });
  }

  function segments(points) {
    var out = [], cur = [];
    points.forEach(function (p) {
      if (p) cur.push(p); else if (cur.length) { out.push(cur); cur = []; }
    });
    if (cur.length) out.push(cur);
    return out;
  }

  /* The relative lift of one metric over the snapshot history with its confidence sequence. */
  function drawCumulative(svg, data, metricKey) {
    var W = widthOf(svg, 900), H = 280, left = 62, right = W - 16, top = 30, bottom = H - 28;
    reset(svg, W, H);
    var hist = data.history;
    var metric = data.metrics.find(function (m) { return m.key === metricKey; }) || data.metrics[0];
    if (!metric || !hist.length) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "muted" }, svg, "No snapshots yet");
      return;
    }
    var arms = metric.arms.map(function (a) { return a.variant; });
    var xs = hist.map(function (h) { return Date.parse(h.data_through); });
    var CLIP = 1.0, clipped = false;
    function clip(z) { return Math.max(-CLIP, Math.min(CLIP, z)); }
    var values = [0];
    hist.forEach(function (h) {
      var m = h.metrics[metric.key] || {};
      arms.forEach(function (v) {
        var p = m[v];
        if (!p) return;
        [p.lift_rel, p.ci_low, p.ci_high].forEach(function (z) { if (isNum(z)) values.push(clip(z)); });
      });
    });
    var dom = pad(Math.min.apply(null, values), Math.max.apply(null, values), 0.06);
    var single = xs[xs.length - 1] === xs[0];
    var x = single ? function () { return (left + right) / 2; } : scale(xs[0], xs[xs.length - 1], left, right);
    var y = scale(dom[0], dom[1], bottom, top);
    valueAxis(svg, niceTicks(dom[0], dom[1], 5), y, left, right, function (t) { return pct(t, 0); });
    timeAxis(svg, xs, x, bottom, left, right);
    el("line", { "class": "zero", x1: left, x2: right, y1: y(0), y2: y(0) }, svg);
    var items = [];
    arms.forEach(function (v) {
      var color = variantColor(data, v);
      var pts = hist.map(function (h, i) {
        var p = (h.metrics[metric.key] || {})[v];
        if (!p || !isNum(p.lift_rel)) return null;
        // The band is the interval that decides; an unbounded end or one beyond +/-CLIP is drawn
        // at the clip line (and said so in the legend). Collecting snapshots decide nothing.
        var deciding = h.look_kind !== "collecting";
        var lo = deciding ? (isNum(p.ci_low) ? p.ci_low : -CLIP) : null;
        var hi = deciding ? (isNum(p.ci_high) ? p.ci_high : CLIP) : null;
        if (lo !== null && (lo < -CLIP || hi > CLIP || !isNum(p.ci_low) || !isNum(p.ci_high))) clipped = true;
        return { x: x(xs[i]), p: { lift_rel: clip(p.lift_rel), lo: lo === null ? null : clip(lo),
          hi: hi === null ? null : clip(hi), ci_low: p.ci_low, ci_high: p.ci_high }, t: h.data_through };
      });
      segments(pts).forEach(function (seg) {
        var band = seg.filter(function (s) { return isNum(s.p.lo) && isNum(s.p.hi); });
        if (band.length > 1) {
          var d = band.map(function (s, i) { return (i ? "L" : "M") + s.x + "," + y(s.p.hi); }).join("") +
            band.slice().reverse().map(function (s) { return "L" + s.x + "," + y(s.p.lo); }).join("") + "Z";
          el("path", { d: d, fill: color, opacity: 0.14 }, svg);
        } else if (band.length === 1) {
          el("line", { x1: band[0].x, x2: band[0].x, y1: y(band[0].p.lo), y2: y(band[0].p.hi),
            stroke: color, "stroke-width": 6, opacity: 0.3, "stroke-linecap": "round" }, svg);
        }
        if (seg.length > 1) {
          el("path", { d: seg.map(function (s, i) { return (i ? "L" : "M") + s.x + "," + y(s.p.lift_rel); }).join(""),
            fill: "none", stroke: color, "stroke-width": 2 }, svg);
        }
        seg.forEach(function (s) {
          var dot = el("circle", { cx: s.x, cy: y(s.p.lift_rel), r: seg.length > 60 ? 1.5 : 3, fill: color }, svg);
          var ends = isNum(s.p.ci_low) && isNum(s.p.ci_high) ? " [" + pct(s.p.ci_low, 2) + ", " + pct(s.p.ci_high, 2) + "]" : " [interval not bounded yet]";
          title(dot, v + " at " + s.t + ": " + pct(s.p.lift_rel, 2) + ends);
        });
      });
      items.push({ color: color, label: v + " lift (band: the interval that decides)" });
    });
    if (clipped) items.push({ color: "#999", label: "wide intervals clipped at \u00b1" + pct(CLIP, 0) });
    legend(svg, items, left, 12);
  }

  /* Exposed units per variant, snapshot by snapshot, against the configured split. */
  function drawExposures(svg, data) {
    var W = widthOf(svg, 900), H = 250, left = 62, right = W - 16, top = 30, bottom = H - 28;
    reset(svg, W, H);
    var hist = data.history;
    if (!hist.length) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "muted" }, svg, "No snapshots yet");
      return;
    }
    var xs = hist.map(function (h) { return Date.parse(h.data_through); });
    var totalWeight = data.variants.reduce(function (s, v) { return s + v.weight; }, 0) || 1;
    var maxY = 1;
    hist.forEach(function (h) {
      maxY = Math.max(maxY, h.total_units * Math.max.apply(null, data.variants.map(function (v) { return v.weight / totalWeight; })));
      data.variants.forEach(function (v) { maxY = Math.max(maxY, h.units_by_variant[v.key] || 0); });
    });
    var single = xs[xs.length - 1] === xs[0];
    var x = single ? function () { return (left + right) / 2; } : scale(xs[0], xs[xs.length - 1], left, right);
    var y = scale(0, maxY * 1.08, bottom, top);
    valueAxis(svg, niceTicks(0, maxY * 1.08, 5), y, left, right, count);
    timeAxis(svg, xs, x, bottom, left, right);
    var items = [];
    data.variants.forEach(function (v) {
      var color = variantColor(data, v.key);
      var share = v.weight / totalWeight;
      var expected = hist.map(function (h, i) { return (i ? "L" : "M") + x(xs[i]) + "," + y(h.total_units * share); }).join("");
      var actual = hist.map(function (h, i) { return (i ? "L" : "M") + x(xs[i]) + "," + y(h.units_by_variant[v.key] || 0); }).join("");
      if (hist.length > 1) {
        el("path", { d: expected, fill: "none", stroke: color, "stroke-width": 1.5, "stroke-dasharray": "5 4", opacity: 0.8 }, svg);
        el("path", { d: actual, fill: "none", stroke: color, "stroke-width": 2.2 }, svg);
      }
      hist.forEach(function (h, i) {
        var got = h.units_by_variant[v.key] || 0;
        var dot = el("circle", { cx: x(xs[i]), cy: y(got), r: hist.length > 60 ? 1.5 : 3.2, fill: color }, svg);
        title(dot, v.key + " at " + h.data_through + ": " + count(got) + " units (expected " + count(h.total_units * share) + ")");
        if (hist.length === 1) {
          el("line", { x1: x(xs[i]) - 14, x2: x(xs[i]) + 14, y1: y(h.total_units * share), y2: y(h.total_units * share),
            stroke: color, "stroke-dasharray": "4 3", "stroke-width": 1.5 }, svg);
        }
      });
      items.push({ color: color, label: v.key + " (" + Math.round(share * 100) + "%)" });
      items.push({ color: color, label: "expected", dashed: true });
    });
    legend(svg, items, left, 12);
  }

  /* Units so far against the planned sample size, with the estimated days left. */
  function drawProgress(svg, progress) {
    var W = widthOf(svg, 900), H = 56, left = 4, right = W - 4, barY = 10, barH = 18;
    reset(svg, W, H);
    el("rect", { x: left, y: barY, width: right - left, height: barH, rx: 9, fill: "#eef1f6" }, svg);
    if (!progress.planned) {
      el("text", { x: left, y: barY + barH + 22, "class": "muted" }, svg,
        count(progress.units) + " units so far. No planned sample size is set, so there is no target to show.");
      return;
    }
    var frac = Math.max(0, Math.min(1, progress.fraction || 0));
    var x = scale(0, 1, left, right);
    var fill = el("rect", { x: left, y: barY, width: Math.max(frac > 0 ? 9 : 0, x(frac) - left), height: barH, rx: 9,
      fill: frac >= 1 ? "#12805c" : "#3b5bdb" }, svg);
    title(fill, count(progress.units) + " of " + count(progress.planned) + " units");
    [0.25, 0.5, 0.75].forEach(function (t) {
      el("line", { x1: x(t), x2: x(t), y1: barY, y2: barY + barH, stroke: "#fff", "stroke-width": 1.5 }, svg);
    });
    var text = count(progress.units) + " of " + count(progress.planned) + " units (" + Math.round(frac * 100) + "%)";
    if (frac >= 1) text += " · planned sample reached";
    else if (isNum(progress.days_left)) {
      text += " · about " + (progress.days_left < 1 ? "less than a day" : Math.round(progress.days_left) + " days") +
        " left at " + count(progress.units_per_day) + " units a day";
      if (progress.expected_end) {
        var d = new Date(progress.expected_end);
        text += " (around " + MONTHS[d.getUTCMonth()] + " " + d.getUTCDate() + ")";
      }
    } else text += " · no traffic yet to estimate the days left";
    el("text", { x: left, y: barY + barH + 22, "class": "progress-text" }, svg, text);
  }

  // --- wiring -----------------------------------------------------------------------------------

  function currentView() {
    var checked = document.querySelector("#view-toggle input[name=view]:checked");
    return checked ? checked.value : "seq";
  }

  var VIEW_LABELS = { seq: "always-valid", fixed: "fixed-horizon", bayes: "95% credible" };

  function drawAll() {
    var node = document.getElementById("dashboard-data");
    if (!node) return;
    var data = JSON.parse(node.textContent);
    var view = currentView();
    var root = document.getElementById("dashboard");
    if (root) root.setAttribute("data-view", view);
    document.querySelectorAll(".v-label").forEach(function (s) { s.textContent = VIEW_LABELS[view]; });
    document.querySelectorAll('[data-chart="interval"]').forEach(function (fig) {
      var metric = data.metrics.find(function (m) { return m.key === fig.getAttribute("data-metric"); });
      if (metric) drawInterval(fig.querySelector("svg"), metric, view);
    });
    var cumulative = document.querySelector('[data-chart="cumulative"] svg');
    var select = document.getElementById("cumulative-metric");
    if (cumulative) drawCumulative(cumulative, data, select ? select.value : null);
    var exposures = document.querySelector('[data-chart="exposures"] svg');
    if (exposures) drawExposures(exposures, data);
    var progress = document.querySelector('[data-chart="progress"] svg');
    if (progress) drawProgress(progress, data.progress);
  }

  function bindDashboard() {
    document.querySelectorAll("#view-toggle input[name=view]").forEach(function (input) {
      input.addEventListener("change", drawAll);
    });
    var select = document.getElementById("cumulative-metric");
    if (select) select.addEventListener("change", drawAll);
    drawAll();
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(drawAll, 150);
  });

  // --- refresh ----------------------------------------------------------------------------------

  var STEPS = ["queued", "running", "done"];

  function showProgress(step, text, failed) {
    var box = document.getElementById("refresh-status");
    if (!box) return;
    box.hidden = false;
    box.classList.toggle("failed", !!failed);
    box.setAttribute("data-step", step);
    var index = STEPS.indexOf(step);
    box.querySelectorAll(".steps li").forEach(function (li) {
      var i = STEPS.indexOf(li.getAttribute("data-step"));
      li.classList.toggle("done", i < index || step === "done");
      li.classList.toggle("active", i === index && step !== "done");
    });
    var bar = document.getElementById("refresh-progress");
    if (bar) {
      if (step === "queued" && !failed) bar.removeAttribute("value");
      else bar.value = step === "done" ? 3 : index + 1;
    }
    box.querySelector(".refresh-text").textContent = text;
  }

  function computedAt() {
    var t = document.getElementById("computed-at");
    return t ? t.getAttribute("datetime") : null;
  }

  function sameTime(a, b) {
    if (!a || !b) return a === b;
    return Date.parse(a) === Date.parse(b);
  }

  function swapDashboard() {
    // The query keeps the page's choices (e.g. ?dimension= of the breakdown).
    return fetch(window.location.pathname + window.location.search, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (!r.ok) throw new Error("the page answered " + r.status);
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("dashboard");
        var old = document.getElementById("dashboard");
        if (!fresh || !old) throw new Error("no dashboard in the page");
        var view = currentView();
        old.replaceWith(document.importNode(fresh, true));
        var radio = document.querySelector('#view-toggle input[value="' + view + '"]');
        if (radio) radio.checked = true;
        bindDashboard();
      });
  }

  function bindRefresh() {
    var form = document.getElementById("refresh-form");
    if (!form || !window.fetch) return;
    var button = document.getElementById("refresh");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var before = computedAt();
      var started = Date.now();
      var token = form.querySelector("[name=csrfmiddlewaretoken]").value;
      button.disabled = true;
      showProgress("queued", "Queueing an analysis…");
      fetch(form.getAttribute("data-analyze-url"), {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRFToken": token, Accept: "application/json" },
      })
        .then(function (r) {
          return r.json().then(function (body) {
            if (!r.ok) throw new Error(body.detail || "the server answered " + r.status);
            return body;
          });
        })
        .then(function (body) { poll(body.run_id, before, started); })
        .catch(function (err) {
          button.disabled = false;
          showProgress("queued", "Could not queue the analysis: " + err.message, true);
        });
    });

    function poll(runId, before, started) {
      var seconds = Math.round((Date.now() - started) / 1000);
      if (seconds > 900) {
        button.disabled = false;
        showProgress("queued", "No new snapshot after 15 minutes: check that the worker is running.", true);
        return;
      }
      fetch(form.getAttribute("data-results-url"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          var run = data.last_run || {};
          if (data.computed_at && !sameTime(data.computed_at, before)) {
            showProgress("running", "New snapshot found; updating the page…");
            return swapDashboard().then(function () {
              button.disabled = false;
              showProgress("done", "Updated to the snapshot computed at " + data.computed_at.replace("T", " ").slice(0, 19) + " UTC (" + seconds + " s).");
            });
          }
          if (run.id === runId && run.status === "failed") {
            button.disabled = false;
            showProgress("running", "The analysis failed: " + (run.error || "no message"), true);
            return null;
          }
          if (run.id === runId && run.status === "skipped") {
            showProgress("running", "Another analysis of this experiment is already running; waiting for its snapshot… " + seconds + " s");
          } else if (run.id === runId && run.status === "running") {
            showProgress("running", "Computing the statistics… " + seconds + " s");
          } else {
            showProgress("queued", seconds > 60
              ? "Still waiting for a worker after " + seconds + " s: is the Celery worker running?"
              : "Queued: waiting for a worker… " + seconds + " s");
          }
          window.setTimeout(function () { poll(runId, before, started); }, seconds < 10 ? 1000 : 2500);
          return null;
        })
        .catch(function () {
          window.setTimeout(function () { poll(runId, before, started); }, 3000);
        });
    }
  }

  function init() {
    bindDashboard();
    bindRefresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
