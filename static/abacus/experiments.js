/* abacus: behaviour of the experiment pages (no inline scripts: the CSP forbids them).
 *
 * - forms with data-confirm ask before they submit;
 * - formset tables (data-formset) add and remove rows from a <template>;
 * - the variant table keeps one control ticked and shows the weight total live;
 * - the power calculator asks /api/v1/power as the PM types (debounced), with the variants'
 *   weights, the ramp plan and the looks; errors go next to the field the API names; "Use recent
 *   data" fills the baseline from /api/v1/projects/<p>/metrics/<key>/baseline;
 * - buttons with data-copy copy a field's text.
 */
(function () {
  "use strict";

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $$(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  // --- confirmations ---------------------------------------------------------------------------
  function initConfirm() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      var question = form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) { event.preventDefault(); }
    });
  }

  // --- formset rows ----------------------------------------------------------------------------
  function liveRows(prefix) {
    var table = $('table[data-formset="' + prefix + '"]');
    if (!table) { return []; }
    return $$("tbody tr.formset-row", table).filter(function (row) { return !row.hidden; });
  }

  function renumberStages() {
    liveRows("ramp").forEach(function (row, i) {
      var cell = $(".stage-number", row);
      if (cell) { cell.textContent = String(i + 1); }
    });
  }

  function changed() {
    updateWeightTotal();
    renumberStages();
    toggleMargins();
    schedulePower();
  }

  function initFormsets() {
    $$("[data-add-row]").forEach(function (button) {
      button.addEventListener("click", function () {
        var prefix = button.getAttribute("data-add-row");
        var total = $("#id_" + prefix + "-TOTAL_FORMS");
        var template = $("#" + prefix + "-template");
        var body = $('table[data-formset="' + prefix + '"] tbody');
        if (!total || !template || !body) { return; }
        var index = parseInt(total.value, 10) || 0;
        var html = template.innerHTML.replace(/__prefix__/g, String(index));
        body.insertAdjacentHTML("beforeend", html);
        total.value = String(index + 1);
        var row = body.lastElementChild;
        if (prefix === "ramp") {
          var hours = $('input[name$="-min_hours"]', row);
          if (hours && !hours.value) { hours.value = "24"; }
        }
        var first = row && $("input:not([type=checkbox]), select", row);
        if (first) { first.focus(); }
        changed();
      });
    });
    document.addEventListener("click", function (event) {
      var button = event.target.closest("[data-remove-row]");
      if (!button) { return; }
      var row = button.closest("tr");
      var box = $('input[type=checkbox][name$="-DELETE"]', row);
      if (box) { box.checked = true; }
      row.hidden = true;
      changed();
    });
  }

  // --- variants: one control, weights that sum to 1 ---------------------------------------------
  function weightInputs() {
    return liveRows("variants").map(function (row) { return $("input.weight", row); })
      .filter(Boolean);
  }

  function updateWeightTotal() {
    var out = $("#weight-total");
    if (!out) { return; }
    var inputs = weightInputs();
    var total = 0;
    var blank = false;
    inputs.forEach(function (input) {
      if (input.value === "") { blank = true; return; }
      total += parseFloat(input.value) || 0;
    });
    var rounded = Math.round(total * 1e6) / 1e6;
    var ok = !blank && Math.abs(total - 1) <= 1e-6;
    out.textContent = blank
      ? "Fill in every weight."
      : ok ? "Weights sum to 1." : "Weights sum to " + rounded + "; they must sum to 1.";
    out.className = "weight-total " + (ok ? "ok" : "bad");
  }

  function initVariants() {
    document.addEventListener("change", function (event) {
      var box = event.target;
      if (box.classList && box.classList.contains("is-control") && box.checked) {
        liveRows("variants").forEach(function (row) {
          var other = $("input.is-control", row);
          if (other && other !== box) { other.checked = false; }
        });
      }
    });
    document.addEventListener("input", function (event) {
      if (event.target.classList && event.target.classList.contains("weight")) { changed(); }
    });
    var split = $("#split-evenly");
    if (split) {
      split.addEventListener("click", function () {
        var inputs = weightInputs();
        if (!inputs.length) { return; }
        var share = Math.floor(10000 / inputs.length) / 10000;
        inputs.forEach(function (input, i) {
          var last = i === inputs.length - 1;
          input.value = last ? String(Math.round((1 - share * (inputs.length - 1)) * 10000) / 10000)
            : String(share);
        });
        changed();
      });
    }
    updateWeightTotal();
  }

  // --- metrics: the margin matters only for guardrails -------------------------------------------
  function toggleMargins() {
    liveRows("metrics").forEach(function (row) {
      var role = $('select[name$="-role"]', row);
      var cell = $(".margin-cell", row);
      if (role && cell) { cell.classList.toggle("inactive", role.value !== "guardrail"); }
    });
  }

  function initMetrics() {
    document.addEventListener("change", function (event) {
      if (event.target.name && /^metrics-\d+-role$/.test(event.target.name)) { changed(); }
    });
    toggleMargins();
  }

  // --- power calculator ----------------------------------------------------------------------
  var powerTimer = null;
  var powerSeq = 0;
  var lastPlan = null;

  function fieldValue(id) {
    var el = document.getElementById(id);
    return el ? el.value.trim() : "";
  }

  function formatNumber(n) { return Math.round(n).toLocaleString("en-US"); }

  function schedulePower() {
    if (!$("#power-calculator")) { return; }
    window.clearTimeout(powerTimer);
    powerTimer = window.setTimeout(computePower, 300);
  }

  function showPower(text, isError) {
    var out = $("#calc-result");
    out.textContent = text;
    out.classList.toggle("bad", !!isError);
  }

  var CALC_FIELDS = ["baseline", "variance", "mde", "daily_units", "looks"];

  function clearPowerErrors() {
    CALC_FIELDS.concat(["other"]).forEach(function (field) {
      var el = document.getElementById("calc-error-" + field);
      if (el) { el.textContent = ""; }
    });
  }

  // A 400 names the field: its message goes next to that field, the rest below the result.
  function showPowerErrors(body) {
    clearPowerErrors();
    var other = [];
    if (!body || typeof body !== "object") { other.push("Cannot compute."); }
    else {
      Object.keys(body).forEach(function (key) {
        var value = body[key];
        var text = Array.isArray(value) ? value.join(" ") : String(value);
        var el = document.getElementById("calc-error-" + key);
        if (el) { el.textContent = text; } else { other.push(key === "detail" ? text : key + ": " + text); }
      });
    }
    $("#calc-error-other").textContent = other.join(" ");
    showPower("Cannot compute: see the message" + (other.length ? " below." : " next to the field."), true);
  }

  // Variants: the live rows' weights and control, or the frozen ones from data attributes.
  function variantDesign(calc) {
    var rows = liveRows("variants");
    if (rows.length) {
      var weights = [];
      var control = 0;
      var complete = true;
      rows.forEach(function (row, i) {
        var input = $("input.weight", row);
        var box = $("input.is-control", row);
        if (!input || input.value.trim() === "") { complete = false; } else { weights.push(input.value.trim()); }
        if (box && box.checked) { control = i; }
      });
      return complete ? { weights: weights.join(","), control: control, count: rows.length }
        : { weights: "", control: control, count: rows.length };
    }
    return {
      weights: calc.getAttribute("data-weights") || "",
      control: parseInt(calc.getAttribute("data-control"), 10) || 0,
      count: parseInt(calc.getAttribute("data-variants"), 10) || 2,
    };
  }

  // The ramp plan: the live stage rows (coverage:min_hours), or the frozen plan.
  function rampPlan(calc) {
    var table = $('table[data-formset="ramp"]');
    if (!table) { return calc.getAttribute("data-ramp") || ""; }
    return liveRows("ramp").map(function (row) {
      var coverage = $('input[name$="-coverage"]', row);
      var hours = $('input[name$="-min_hours"]', row);
      if (!coverage || coverage.value.trim() === "") { return null; }
      return coverage.value.trim() + ":" + ((hours && hours.value.trim()) || "0");
    }).filter(Boolean).join(",");
  }

  function primaryMetricKeys() {
    return liveRows("metrics").filter(function (row) {
      var role = $('select[name$="-role"]', row);
      return role && role.value === "primary";
    }).map(function (row) {
      var metric = $('select[name$="-metric"]', row);
      return metric ? metric.value : "";
    }).filter(Boolean);
  }

  function computePower() {
    var calc = $("#power-calculator");
    var kind = fieldValue("calc-kind");
    var method = fieldValue("calc-method");
    var params = new URLSearchParams();
    params.set("kind", kind);
    params.set("baseline", fieldValue("calc-baseline"));
    params.set("mde", fieldValue("calc-mde"));
    params.set("method", method);
    params.set("alpha", fieldValue("id_alpha") || "0.05");
    var design = variantDesign(calc);
    params.set("variants", String(Math.max(2, design.count)));
    if (design.weights) {
      params.set("weights", design.weights);
      params.set("control", String(design.control));
    }
    var primaries = liveRows("metrics").filter(function (row) {
      var role = $('select[name$="-role"]', row);
      return role && role.value === "primary";
    }).length;
    params.set("primary_metrics", String(Math.max(1, primaries)));
    if (method === "group_sequential" && fieldValue("calc-looks")) { params.set("looks", fieldValue("calc-looks")); }
    var coverage = fieldValue("id_coverage");
    if (coverage) { params.set("coverage", coverage); }
    var ramp = rampPlan(calc);
    if (ramp) { params.set("ramp", ramp); }
    var daily = fieldValue("calc-daily");
    if (daily) { params.set("daily_units", daily); }
    if (kind !== "binomial") { params.set("variance", fieldValue("calc-variance")); }
    if (!fieldValue("calc-baseline") || !fieldValue("calc-mde")) {
      clearPowerErrors();
      showPower("Fill in the baseline and MDE.", false);
      return;
    }
    var seq = ++powerSeq;
    showPower("Calculating…", false);
    fetch(calc.getAttribute("data-power-url") + "?" + params.toString(), {
      headers: { Accept: "application/json" }, credentials: "same-origin",
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (result) {
      if (seq !== powerSeq) { return; }  // an older answer arriving late
      var apply = $("#calc-apply") || {};
      if (!result.ok) {
        lastPlan = null;
        apply.disabled = true;
        showPowerErrors(result.body);
        return;
      }
      clearPowerErrors();
      var plan = result.body;
      lastPlan = plan;
      apply.disabled = false;
      var even = plan.arms.every(function (n) { return n === plan.arms[0]; });
      var parts = [];
      if (even) {
        parts.push(formatNumber(plan.per_arm) + " units per variant, " + formatNumber(plan.total) + " in total");
      } else {
        parts.push(plan.arms.map(function (n, i) {
          return formatNumber(n) + (i === plan.control ? " (control)" : "");
        }).join(" + ") + " = " + formatNumber(plan.total) + " units in total");
      }
      if (plan.days !== null) {
        var days = Math.ceil(plan.days);
        parts.push("about " + days + " day" + (days === 1 ? "" : "s") +
          (ramp ? " through the ramp plan" : " at " + formatNumber(parseFloat(daily) * (parseFloat(coverage) || 1)) + " units a day in the experiment"));
      } else {
        parts.push("add units per day for the duration");
      }
      var extra = Math.round((plan.inflation - 1) * 100);
      var note = plan.method === "fixed" ? "fixed horizon: look only once, at the end"
        : "+" + extra + "% over a fixed-horizon test (" + formatNumber(plan.fixed_total) +
          ") for the right to look at results any time" +
          (plan.method === "group_sequential" ? " (" + plan.looks + " looks)" : "");
      parts.push(note);
      if (plan.alpha_per_test < parseFloat(params.get("alpha")) - 1e-12) {
        parts.push("alpha per test " + plan.alpha_per_test.toPrecision(2) +
          " (split over primary metrics and treatment arms)");
      }
      showPower(parts.join(" · "), false);
    }).catch(function () {
      if (seq === powerSeq) { showPower("The calculator is unavailable right now.", true); }
    });
  }

  // "Use recent data": the first primary metric's baseline over the last 14 days.
  function useRecentData() {
    var calc = $("#power-calculator");
    var note = $("#calc-data-note");
    var key = primaryMetricKeys()[0];
    if (!key) { note.textContent = "Choose a primary metric first (section 3)."; return; }
    note.textContent = "Reading the last 14 days of " + key + "…";
    var url = calc.getAttribute("data-baseline-url").replace("__metric__", encodeURIComponent(key));
    fetch(url + "?days=14", { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      }).then(function (result) {
        var body = result.body || {};
        if (!result.ok) {
          note.textContent = "No baseline: " + (body.detail || Object.keys(body).map(function (k) {
            return [].concat(body[k]).join(" ");
          }).join(" "));
          return;
        }
        if (!body.units || body.mean === null) {
          note.textContent = "No units of " + key + " in the last 14 days: type the baseline by hand.";
          return;
        }
        var kind = $("#calc-kind");
        kind.value = body.kind;
        kind.dispatchEvent(new Event("change"));
        $("#calc-baseline").value = String(Number(body.mean.toPrecision(6)));
        if (body.kind !== "binomial") { $("#calc-variance").value = String(Number(body.variance.toPrecision(6))); }
        $("#calc-daily").value = String(Math.round(body.daily_units));
        note.textContent = "From " + formatNumber(body.units) + " units of " + key + " over the last " +
          body.days + " days (" + body.window_hours + " h conversion window).";
        schedulePower();
      }).catch(function () { note.textContent = "The baseline is unavailable right now."; });
  }

  function initPower() {
    var calc = $("#power-calculator");
    if (!calc) { return; }
    var kind = $("#calc-kind");
    var method = $("#calc-method");
    function kindChanged() {
      var binomial = kind.value === "binomial";
      $$(".continuous-only", calc).forEach(function (el) { el.hidden = binomial; });
      $("#calc-baseline-label").textContent = binomial ? "Baseline conversion rate"
        : kind.value === "ratio" ? "Baseline ratio" : "Baseline mean per unit";
    }
    function methodChanged() {
      $$(".gs-only", calc).forEach(function (el) { el.hidden = method.value !== "group_sequential"; });
    }
    kind.addEventListener("change", function () { kindChanged(); schedulePower(); });
    method.addEventListener("change", methodChanged);
    kindChanged();
    methodChanged();
    $$("input, select", calc).forEach(function (el) { el.addEventListener("input", schedulePower); });
    ["id_alpha", "id_coverage"].forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.addEventListener("input", schedulePower); }
    });
    // Ramp stages and the control tick change the plan too.
    document.addEventListener("input", function (event) {
      var name = event.target.name || "";
      if (/^ramp-\d+-(coverage|min_hours)$/.test(name)) { schedulePower(); }
    });
    document.addEventListener("change", function (event) {
      if (event.target.classList && event.target.classList.contains("is-control")) { schedulePower(); }
    });
    var useData = $("#calc-use-data");
    if (useData) { useData.addEventListener("click", useRecentData); }
    var apply = $("#calc-apply");
    if (apply) apply.addEventListener("click", function () {
      if (!lastPlan) { return; }
      var sample = document.getElementById("id_planned_sample_size");
      var mde = document.getElementById("id_mde");
      if (sample && !sample.disabled) { sample.value = String(lastPlan.total); }
      if (mde && !mde.disabled) { mde.value = String(lastPlan.mde); }
    });
    schedulePower();
  }

  // --- copy buttons --------------------------------------------------------------------------
  function initCopy() {
    $$("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var field = $(button.getAttribute("data-copy"));
        if (!field) { return; }
        field.select();
        if (navigator.clipboard) {
          navigator.clipboard.writeText(field.value).then(function () { button.textContent = "Copied"; });
        } else {
          document.execCommand("copy");
          button.textContent = "Copied";
        }
      });
    });
  }

  // --- focus the first error ----------------------------------------------------------------------
  function focusFirstError() {
    var first = $(".has-error input, .has-error select, .has-error textarea, #form-errors");
    if (first && first.scrollIntoView) { first.scrollIntoView({ block: "center" }); }
  }

  function init() {
    initConfirm();
    initFormsets();
    initVariants();
    initMetrics();
    initPower();
    initCopy();
    renumberStages();
    focusFirstError();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
