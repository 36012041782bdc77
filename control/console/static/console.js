// lsproxy console: the only script (served from 'self'; no inline script).
// Copies the authorization link, and keeps the counts at the top live.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var input = document.getElementById(btn.getAttribute("data-copy"));
      var done = function () {
        var note = document.querySelector("[data-copied]");
        if (note) { note.hidden = false; }
      };
      input.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () {
          document.execCommand("copy"); done();
        });
      } else {
        document.execCommand("copy"); done();
      }
    });
  });

  var counts = document.getElementById("counts");
  if (!counts) { return; }
  var update = function () {
    fetch("/console/counts", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (n) {
        if (!n) { return; }
        counts.querySelectorAll("[data-count]").forEach(function (el) {
          var v = n[el.getAttribute("data-count")];
          if (typeof v === "number") { el.textContent = String(v); }
        });
        var stale = counts.querySelector("[data-count-stale]");
        if (stale) { stale.hidden = !n.stale; }
      })
      .catch(function () {});
  };
  setInterval(update, 10000);
});
