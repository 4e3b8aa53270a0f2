// perseid-jobs dashboard: live updates and plots. No inline script anywhere (the CSP
// forbids it); the server renders every fragment, escaped, and this only swaps them in.
"use strict";

(function () {
  var pending = false, inflight = 0, again = false;

  // Fetch every [data-live] part of the page again, at most one round at a time: an
  // event that arrives during a round schedules one more, so the last change is shown.
  function refresh() {
    if (inflight) { again = true; return; }
    var parts = document.querySelectorAll("[data-live]");
    inflight = parts.length;
    again = false;
    parts.forEach(function (el) {
      fetch(el.getAttribute("data-live"), { credentials: "same-origin", headers: { "HX-Request": "true" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html !== null) {
            el.innerHTML = html;
            if (window.htmx) { window.htmx.process(el); }
            drawPlots();
          }
        })
        .catch(function () {})
        .finally(function () {
          inflight -= 1;
          if (inflight === 0 && again) { schedule(); }
        });
    });
  }

  function schedule() {
    if (pending) { return; }
    pending = true;
    setTimeout(function () { pending = false; refresh(); }, 100);
  }

  function connect() {
    if (!document.querySelector("[data-live]") || !window.EventSource) { return; }
    var badge = document.getElementById("live");
    var source = new EventSource("/api/events");
    source.onopen = function () { if (badge) { badge.className = "live on"; } };
    source.onerror = function () { if (badge) { badge.className = "live off"; } };
    source.onmessage = function () { schedule(); };
  }

  var plotted = null;
  function drawPlots() {
    var el = document.getElementById("plots");
    if (!el || !window.uPlot) { return; }
    var text = el.getAttribute("data-plot");
    if (text === plotted && el.childElementCount) { return; }
    plotted = text;
    var d = JSON.parse(text);
    el.textContent = "";
    var width = Math.max(300, Math.min(560, el.clientWidth / 3 - 16));
    [["throughput", "tasks ended / min", "#2f6f4f"],
     ["failure_pct", "failure rate %", "#b03a2e"],
     ["lag_s", "due → start lag (s)", "#1f4e79"]].forEach(function (p) {
      var box = document.createElement("div");
      el.appendChild(box);
      new window.uPlot({
        title: p[1], width: width, height: 180,
        series: [{}, { label: p[1], stroke: p[2], width: 2, spanGaps: false }],
        axes: [{}, { size: 50 }]
      }, [d.x, d[p[0]]], box);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawPlots();
    connect();
    // A running task's log grows without an event: its page looks again every second.
    setInterval(function () { if (document.querySelector("[data-running]")) { schedule(); } }, 1000);
  });
  document.addEventListener("htmx:afterRequest", function (ev) {
    // An action's answer shows in #action-result; the page itself follows the events.
    var out = document.getElementById("action-result");
    var xhr = ev.detail && ev.detail.xhr;
    if (out && xhr && ev.detail.elt && ev.detail.elt.hasAttribute("hx-post")) {
      out.textContent = xhr.status >= 400 ? (JSON.parse(xhr.responseText || "{}").error || xhr.statusText) : xhr.responseText;
      out.className = xhr.status >= 400 ? "error show" : "show";
      schedule();
    }
  });
})();
