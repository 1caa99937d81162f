/* abacus beacon: a web page posts exposures and events to abacus (docs/clients.md, "Events from
   browsers"). No dependencies, no request until an event is queued.

     abacus.init({host: "https://abacus.example.com", key: "web-...", unitId: "u-42"});
     abacus.exposure({experiment: "checkout-v2", variant: "treatment"});
     abacus.exposure({flag: "new-checkout", variation: "on"});
     abacus.track("purchase", {value: 12.5, properties: {plan: "pro"}});

   Events wait in a bounded queue and leave in batches (batchSize events, or flushInterval ms
   after the first one waited), and all at once when the page is hidden or left
   (visibilitychange, pagehide), by navigator.sendBeacon; fetch with keepalive when sendBeacon
   is missing or refuses. Every event carries a random event_id, so a resent batch is stored
   once. */
(function (global) {
  "use strict";

  var SERVER_BATCH = 100; // the most the server takes in one request from a browser key
  var MAX_BYTES = 60000; // below sendBeacon's 64 KiB and the server's limit
  var MAX_TRIES = 3; // fetch only: sendBeacon tells nothing about delivery

  var config = null;
  var queue = []; // {event, tries}
  var timer = null;
  var dropped = 0;
  var unitId = null;
  var listening = false;

  function number(value, low, high, fallback) {
    value = Number(value);
    return isFinite(value) ? Math.min(high, Math.max(low, Math.floor(value))) : fallback;
  }

  function uuid() {
    var c = global.crypto;
    if (c && typeof c.randomUUID === "function") {
      return c.randomUUID(); // secure contexts (https, localhost)
    }
    var b = new Uint8Array(16);
    var i;
    if (c && typeof c.getRandomValues === "function") {
      c.getRandomValues(b);
    } else {
      for (i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    }
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    var hex = "";
    for (i = 0; i < 16; i++) {
      hex += (b[i] + 0x100).toString(16).slice(1);
      if (i === 3 || i === 5 || i === 7 || i === 9) hex += "-";
    }
    return hex;
  }

  function bytes(text) {
    return typeof TextEncoder === "function" ? new TextEncoder().encode(text).length : text.length * 3;
  }

  function init(options) {
    options = options || {};
    if (!options.host || !options.key) {
      throw new Error("abacus.init needs {host, key}: abacus's address and a browser key");
    }
    config = {
      url: String(options.host).replace(/\/+$/, "") + "/api/v1/events/beacon?key=" +
        encodeURIComponent(options.key),
      batchSize: number(options.batchSize, 1, SERVER_BATCH, 20),
      flushInterval: number(options.flushInterval, 0, 600000, 5000),
      maxQueue: number(options.maxQueue, 1, 100000, 1000)
    };
    if (options.unitId != null) unitId = String(options.unitId);
    if (!listening && typeof global.addEventListener === "function") {
      listening = true;
      global.addEventListener("pagehide", flush);
      if (global.document) {
        global.document.addEventListener("visibilitychange", function () {
          if (global.document.visibilityState === "hidden") flush();
        });
      }
    }
  }

  function identify(id) {
    unitId = id == null ? null : String(id);
  }

  function unit(options) {
    var id = options.unitId != null ? options.unitId : unitId;
    if (id == null) throw new Error("abacus: no unit id: abacus.init({unitId}) or abacus.identify(id)");
    return String(id);
  }

  function schedule() {
    if (!timer && queue.length) timer = setTimeout(flush, config.flushInterval);
  }

  function bound() {
    while (queue.length > config.maxQueue) {
      queue.shift(); // the oldest goes first
      dropped++;
    }
  }

  function enqueue(event) {
    if (!config) throw new Error("abacus: call abacus.init({host, key}) first");
    event.event_id = uuid();
    event.timestamp = new Date().toISOString();
    queue.push({event: event, tries: 0});
    bound();
    if (queue.length >= config.batchSize) flush();
    else schedule();
    return event.event_id;
  }

  function exposure(options) {
    options = options || {};
    var event = {type: "exposure", unit_id: unit(options)};
    if (options.flag != null) {
      event.flag = options.flag;
      event.variation = options.variation;
    } else {
      event.experiment = options.experiment;
      event.variant = options.variant;
    }
    if (options.attributes) event.attributes = options.attributes;
    return enqueue(event);
  }

  function track(name, options) {
    options = options || {};
    var event = {type: "metric", name: name, unit_id: unit(options)};
    if (options.value != null) event.value = options.value;
    if (options.properties) event.properties = options.properties;
    return enqueue(event);
  }

  function requeue(items) {
    var again = items.filter(function (item) {
      return ++item.tries < MAX_TRIES;
    });
    dropped += items.length - again.length;
    queue = again.concat(queue);
    bound();
    schedule();
  }

  function send(items) {
    var body = JSON.stringify({events: items.map(function (item) { return item.event; })});
    if (items.length > 1 && bytes(body) > MAX_BYTES) {
      var half = Math.ceil(items.length / 2);
      send(items.slice(0, half));
      send(items.slice(half));
      return;
    }
    var nav = global.navigator;
    if (nav && typeof nav.sendBeacon === "function") {
      try {
        if (nav.sendBeacon(config.url, body)) return; // text/plain: no preflight
      } catch (e) { /* fall back to fetch */ }
    }
    if (typeof global.fetch !== "function") {
      requeue(items);
      return;
    }
    global.fetch(config.url, {
      method: "POST",
      body: body,
      keepalive: true,
      mode: "cors",
      credentials: "omit",
      headers: {"Content-Type": "text/plain;charset=UTF-8"}
    }).then(function (response) {
      if (response.status === 429 || response.status >= 500) requeue(items);
      else if (response.status >= 400) dropped += items.length; // refused: resending cannot help
    }, function () {
      requeue(items); // offline, or the answer was unreadable
    });
  }

  function flush() {
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
    if (!config) return;
    while (queue.length) send(queue.splice(0, config.batchSize));
  }

  global.abacus = {
    init: init,
    identify: identify,
    exposure: exposure,
    track: track,
    flush: flush,
    pending: function () { return queue.length; },
    dropped: function () { return dropped; }
  };
})(typeof window !== "undefined" ? window : this);
