/* abacus: behaviour of the flag pages (no inline scripts: the CSP forbids them). Every page
 * works without it; this file makes the common cases quick:
 *
 * - a production toggle asks on the page before it submits (confirm.js; the server asks
 *   otherwise);
 * - rule rows: show the fields of the rule's type, move up and down (the hidden ORDER fields
 *   follow the rows' order on submit), number them;
 * - rollout sliders: one range per variation, kept summing to 100% (moving one shares the rest
 *   out among the others in proportion), mirrored in the number inputs the server reads;
 * - the condition builder: rows of attribute, operator, value, AND-ed into GrowthBook
 *   condition JSON written into the textarea beside it (the textarea is what is saved; JSON
 *   the builder cannot show is left alone, with a note).
 * Rows added from a <template> (experiments.js adds them) are set up when they appear.
 */
(function () {
  "use strict";

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $$(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  // --- rule rows --------------------------------------------------------------------------
  function ruleRows() {
    return $$('table[data-formset="rules"] tbody tr.formset-row');
  }

  function showForType(row) {
    var select = $('select[name$="-type"]', row);
    if (!select) { return; }
    $$("[data-show-for]", row).forEach(function (el) {
      el.hidden = el.getAttribute("data-show-for").split(" ").indexOf(select.value) < 0;
    });
  }

  function renumberRules() {
    var n = 0;
    ruleRows().forEach(function (row) {
      var order = $('input[name$="-ORDER"]', row);
      if (row.hidden) { return; }
      n += 1;
      if (order) { order.value = String(n); }
      var label = $(".rule-number", row);
      if (label) { label.textContent = "#" + n; }
    });
  }

  function moveRule(row, direction) {
    var sibling = row;
    do {
      sibling = direction === "up" ? sibling.previousElementSibling : sibling.nextElementSibling;
    } while (sibling && sibling.hidden);
    if (!sibling) { return; }
    if (direction === "up") { sibling.before(row); } else { sibling.after(row); }
    renumberRules();
  }

  function initRules() {
    if (!$('table[data-formset="rules"]')) { return; }
    document.addEventListener("change", function (event) {
      if (event.target.name && /^rules-\d+-type$/.test(event.target.name)) {
        showForType(event.target.closest("tr"));
      }
    });
    document.addEventListener("click", function (event) {
      var move = event.target.closest("[data-move]");
      if (move) { moveRule(move.closest("tr"), move.getAttribute("data-move")); }
      if (event.target.closest("[data-remove-row]")) { window.setTimeout(renumberRules, 0); }
    });
    var form = $("#rules-form");
    if (form) { form.addEventListener("submit", renumberRules); }
  }

  // --- rollout sliders ----------------------------------------------------------------------
  function round1(x) { return Math.round(x * 10) / 10; }

  function sliderRows(rollout) { return $$(".slider-row", rollout); }

  function pctInput(sliderRow) { return $("input.rollout-pct", sliderRow); }

  function showRolloutTotal(rollout) {
    var total = 0;
    sliderRows(rollout).forEach(function (r) { total += parseFloat(pctInput(r).value) || 0; });
    total = Math.round(total * 1e6) / 1e6;
    var out = $(".rollout-total", rollout);
    if (!out) { return; }
    var ok = Math.abs(total - 100) <= 1e-6;
    out.textContent = ok ? "Shares sum to 100%." : "Shares sum to " + total + "%; they must sum to 100%.";
    out.className = "rollout-total weight-total " + (ok ? "ok" : "bad");
  }

  // Variation `moved` now has `value`%: the others share the rest in proportion to what they
  // had (evenly when they had nothing); the last of them takes the rounding.
  function rebalance(rollout, moved, value) {
    var rows = sliderRows(rollout);
    var others = rows.filter(function (r) { return r !== moved; });
    var rest = Math.max(0, 100 - value);
    var before = others.reduce(function (sum, r) { return sum + (parseFloat(pctInput(r).value) || 0); }, 0);
    var given = 0;
    others.forEach(function (r, i) {
      var share;
      if (i === others.length - 1) { share = round1(rest - given); }
      else if (before > 0) { share = round1(rest * (parseFloat(pctInput(r).value) || 0) / before); }
      else { share = round1(rest / others.length); }
      share = Math.max(0, share);
      given += share;
      pctInput(r).value = String(share);
      $(".rollout-slider", r).value = String(share);
    });
    pctInput(moved).value = String(value);
    $(".rollout-slider", moved).value = String(value);
    showRolloutTotal(rollout);
  }

  function initRollout(rollout) {
    if (rollout.getAttribute("data-ready")) { return; }
    rollout.setAttribute("data-ready", "1");
    var rows = sliderRows(rollout);
    var blank = rows.every(function (r) { return !pctInput(r).value; });
    rows.forEach(function (r, i) {
      var input = pctInput(r);
      if (blank) { input.value = i === 0 ? "100" : "0"; }  // a new rollout: all on the first
      $(".rollout-slider", r).value = input.value || "0";
    });
    showRolloutTotal(rollout);
  }

  function initRollouts() {
    document.addEventListener("input", function (event) {
      var target = event.target;
      var rollout = target.closest && target.closest(".rollout");
      if (!rollout) { return; }
      var row = target.closest(".slider-row");
      if (target.classList.contains("rollout-slider")) {
        rebalance(rollout, row, round1(parseFloat(target.value) || 0));
      } else if (target.classList.contains("rollout-pct")) {
        $(".rollout-slider", row).value = target.value || "0";
        showRolloutTotal(rollout);
      }
    });
  }

  // --- condition builder --------------------------------------------------------------------
  var OPERATORS = [
    ["eq", "equals"], ["$ne", "does not equal"], ["$in", "is one of"], ["$nin", "is not one of"],
    ["contains", "contains"], ["$regex", "matches regex"],
    ["$gt", "> (number)"], ["$gte", "≥ (number)"], ["$lt", "< (number)"], ["$lte", "≤ (number)"],
    ["$veq", "version ="], ["$vgt", "version >"], ["$vgte", "version ≥"], ["$vlt", "version <"],
    ["$vlte", "version ≤"], ["$exists", "exists (true/false)"],
  ];
  var NUMBER_OPS = ["$gt", "$gte", "$lt", "$lte"];
  var LIST_OPS = ["$in", "$nin"];

  function escapeRegex(text) { return text.replace(/[.*+?^${}()|[\]\\\/]/g, "\\$&"); }

  function unescapeRegex(text) {
    if (/(^|[^\\])[.*+?^${}()|[\]]/.test(text)) { return null; }  // a real pattern
    return text.replace(/\\(.)/g, "$1");
  }

  // Text as typed -> a JSON value: numbers and true/false as such, "quoted" as a string.
  function typed(text) {
    var t = text.trim();
    if (/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(t)) { return Number(t); }
    if (t === "true" || t === "false") { return t === "true"; }
    if (t.length >= 2 && t[0] === '"' && t[t.length - 1] === '"') {
      try { return JSON.parse(t); } catch (e) { return t; }
    }
    return t;
  }

  function shown(value) {
    if (typeof value === "string") {
      return (/^-?\d+(\.\d+)?$/.test(value) || value === "true" || value === "false") ? JSON.stringify(value) : value;
    }
    return String(value);
  }

  function clauseValue(op, text) {
    if (LIST_OPS.indexOf(op) >= 0) {
      return text.split(",").map(function (s) { return s.trim(); }).filter(Boolean).map(typed);
    }
    if (NUMBER_OPS.indexOf(op) >= 0) { var n = Number(text.trim()); return isNaN(n) ? text.trim() : n; }
    if (op === "$exists") { return text.trim() !== "false"; }
    if (op === "contains") { return escapeRegex(text.trim()); }
    if (op === "$regex" || op.charAt(1) === "v") { return text.trim(); }
    return typed(text);
  }

  // Clauses [{attribute, op, value}] -> one GrowthBook condition (AND).
  function buildCondition(clauses) {
    var byAttr = {};
    var clash = false;
    clauses.forEach(function (c) {
      var op = c.op === "eq" ? "$eq" : c.op === "contains" ? "$regex" : c.op;
      var ops = byAttr[c.attribute] = byAttr[c.attribute] || {};
      if (Object.prototype.hasOwnProperty.call(ops, op)) { clash = true; }
      ops[op] = clauseValue(c.op, c.text);
    });
    if (clash) {
      return { $and: clauses.map(function (c) { return buildCondition([c]); }) };
    }
    var condition = {};
    Object.keys(byAttr).forEach(function (attr) {
      var ops = byAttr[attr];
      var keys = Object.keys(ops);
      var plain = keys.length === 1 && keys[0] === "$eq" && typeof ops.$eq !== "object";
      condition[attr] = plain ? ops.$eq : ops;
    });
    return condition;
  }

  // A condition -> clauses, or null when the builder cannot show it.
  function parseCondition(condition) {
    if (!condition || typeof condition !== "object" || Array.isArray(condition)) { return null; }
    if (condition.$and && Object.keys(condition).length === 1 && Array.isArray(condition.$and)) {
      var all = [];
      for (var i = 0; i < condition.$and.length; i++) {
        var part = parseCondition(condition.$and[i]);
        if (!part) { return null; }
        all = all.concat(part);
      }
      return all;
    }
    var clauses = [];
    var keys = Object.keys(condition);
    for (var k = 0; k < keys.length; k++) {
      var attr = keys[k];
      var value = condition[attr];
      if (attr.charAt(0) === "$") { return null; }
      if (value === null || typeof value !== "object") {
        clauses.push({ attribute: attr, op: "eq", text: shown(value) });
        continue;
      }
      if (Array.isArray(value)) { return null; }
      var ops = Object.keys(value);
      for (var j = 0; j < ops.length; j++) {
        var op = ops[j];
        var v = value[op];
        if (op === "$eq") { if (typeof v === "object") { return null; } clauses.push({ attribute: attr, op: "eq", text: shown(v) }); }
        else if (LIST_OPS.indexOf(op) >= 0 && Array.isArray(v)) { clauses.push({ attribute: attr, op: op, text: v.map(shown).join(", ") }); }
        else if (op === "$regex" && typeof v === "string") {
          var plain = unescapeRegex(v);
          clauses.push(plain === null ? { attribute: attr, op: "$regex", text: v } : { attribute: attr, op: "contains", text: plain });
        } else if (OPERATORS.some(function (o) { return o[0] === op; }) && typeof v !== "object") {
          clauses.push({ attribute: attr, op: op, text: String(v) });
        } else { return null; }
      }
    }
    return clauses;
  }

  function clauseRow(builder, clause) {
    var row = document.createElement("div");
    row.className = "cond-row";
    var attr = document.createElement("input");
    attr.type = "text"; attr.className = "cond-attr"; attr.placeholder = "attribute, e.g. country";
    attr.setAttribute("aria-label", "Attribute");
    attr.value = clause.attribute || "";
    var op = document.createElement("select");
    op.className = "cond-op"; op.setAttribute("aria-label", "Operator");
    OPERATORS.forEach(function (o) {
      var option = document.createElement("option");
      option.value = o[0]; option.textContent = o[1];
      op.appendChild(option);
    });
    op.value = clause.op || "eq";
    var value = document.createElement("input");
    value.type = "text"; value.className = "cond-value"; value.placeholder = "value (lists: a, b, c)";
    value.setAttribute("aria-label", "Value");
    value.value = clause.text || "";
    var remove = document.createElement("button");
    remove.type = "button"; remove.className = "link danger-link cond-remove"; remove.textContent = "Remove";
    row.appendChild(attr); row.appendChild(op); row.appendChild(value); row.appendChild(remove);
    $(".cond-rows", builder).appendChild(row);
    return row;
  }

  function builderTarget(builder) { return document.getElementById(builder.getAttribute("data-for")); }

  function writeCondition(builder) {
    var clauses = $$(".cond-row", builder).map(function (row) {
      return { attribute: $(".cond-attr", row).value.trim(), op: $(".cond-op", row).value, text: $(".cond-value", row).value };
    }).filter(function (c) { return c.attribute; });
    var target = builderTarget(builder);
    target.value = clauses.length ? JSON.stringify(buildCondition(clauses)) : "";
  }

  function readCondition(builder) {
    var target = builderTarget(builder);
    var note = $(".cond-note", builder);
    $(".cond-rows", builder).textContent = "";
    var text = target.value.trim();
    var clauses = [];
    if (text) {
      try { clauses = parseCondition(JSON.parse(text)); } catch (e) { clauses = null; }
    }
    builder.classList.toggle("cond-locked", clauses === null);
    note.hidden = clauses !== null;
    note.textContent = clauses === null ? "This condition uses more than the builder shows: edit the JSON below (clear it to use the builder)." : "";
    (clauses || []).forEach(function (c) { clauseRow(builder, c); });
  }

  function initBuilder(builder) {
    if (builder.getAttribute("data-ready") || !builderTarget(builder)) { return; }
    builder.setAttribute("data-ready", "1");
    readCondition(builder);
    builderTarget(builder).addEventListener("input", function () { readCondition(builder); });
  }

  function initBuilders() {
    document.addEventListener("click", function (event) {
      var add = event.target.closest(".cond-add");
      if (add) {
        var builder = add.closest(".cond-builder");
        if (builder.classList.contains("cond-locked")) { return; }
        $(".cond-attr", clauseRow(builder, { op: "eq" })).focus();
        return;
      }
      var remove = event.target.closest(".cond-remove");
      if (remove) {
        var b = remove.closest(".cond-builder");
        remove.closest(".cond-row").remove();
        writeCondition(b);
      }
    });
    ["input", "change"].forEach(function (type) {
      document.addEventListener(type, function (event) {
        var row = event.target.closest && event.target.closest(".cond-row");
        if (row) { writeCondition(row.closest(".cond-builder")); }
      });
    });
  }

  // --- setting up what is on the page, and rows added later ----------------------------------
  function setUp(root) {
    $$(".cond-builder", root).forEach(initBuilder);
    $$(".rollout", root).forEach(initRollout);
    $$("tr.rule-row", root).forEach(showForType);
    renumberRules();
  }

  function init() {
    window.abacus.confirm.init();
    initRules();
    initRollouts();
    initBuilders();
    setUp(document);
    document.addEventListener("click", function (event) {
      if (event.target.closest("[data-add-row]")) { window.setTimeout(function () { setUp(document); }, 0); }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
