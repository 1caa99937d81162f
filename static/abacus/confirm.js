/* abacus: the confirm step of a form.needs-confirm (a production flag toggle, a release's
 * actions). Submitting it shows its .confirm-step (focused on .confirm-yes) instead of sending;
 * the step's button named "confirmed" sends it, a [data-confirm-cancel] button hides the step
 * again. Without JavaScript the server asks on a page of its own. Loaded before the page script
 * (no inline scripts: the CSP), it puts init and isOpen on window.abacus.confirm; the page
 * script calls init once.
 */
(function () {
  "use strict";

  function openSteps() {
    return Array.prototype.slice.call(document.querySelectorAll("form.needs-confirm .confirm-step"))
      .filter(function (s) { return !s.hidden; });
  }

  /* options.oneAtATime: opening a step hides the others that are open. */
  function init(options) {
    var oneAtATime = !!(options && options.oneAtATime);
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!form.classList || !form.classList.contains("needs-confirm")) { return; }
      var submitter = event.submitter;
      if (submitter && submitter.name === "confirmed") { return; }
      event.preventDefault();
      if (oneAtATime) { openSteps().forEach(function (s) { s.hidden = true; }); }
      var step = form.querySelector(".confirm-step");
      if (step) {
        step.hidden = false;
        var yes = step.querySelector(".confirm-yes");
        if (yes) { yes.focus(); }
      }
    });
    document.addEventListener("click", function (event) {
      var cancel = event.target.closest("[data-confirm-cancel]");
      if (cancel) { cancel.closest(".confirm-step").hidden = true; }
    });
  }

  /* Whether a step is waiting for an answer (a page that refreshes itself waits for it). */
  function isOpen() { return openSteps().length > 0; }

  var abacus = window.abacus = window.abacus || {};
  abacus.confirm = { init: init, isOpen: isOpen };
})();
