// The live timeline of a case page (served from the binary as /console.js; no build step).
//
// The page is complete without this script: a reload shows everything. With it, the page
// follows the case's events (WatchCase, relayed by the console as Server-Sent Events),
// appends each new one to the timeline, and re-reads the status and the referrals from the
// server's own rendering of the page, so they are rendered in one place only (Rust).
(function () {
  "use strict";
  var timeline = document.getElementById("timeline");
  if (!timeline || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var caseId = timeline.getAttribute("data-case");
  var shown = Number(timeline.getAttribute("data-version")) || 0;
  // The browser resumes after the last event id it received (Last-Event-ID) when it
  // reconnects; `after` covers the events the page was rendered with.
  var source = new EventSource(
    "/cases/" + encodeURIComponent(caseId) + "/events?after=" + shown
  );

  var busy = false;
  var again = false;
  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(window.location.pathname, { credentials: "same-origin" })
      .then(function (reply) {
        return reply.ok ? reply.text() : null;
      })
      .then(function (html) {
        if (!html) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["case-summary", "referrals"].forEach(function (id) {
          var now = document.getElementById(id);
          var next = fresh.getElementById(id);
          if (now && next) {
            now.replaceWith(document.importNode(next, true));
          }
        });
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  source.addEventListener("case", function (message) {
    var e = JSON.parse(message.data);
    if (e.version <= shown) {
      return;
    }
    shown = e.version;
    timeline.setAttribute("data-version", String(shown));
    // The same text as the server's rendering of an event (page::timeline_item).
    var item = document.createElement("li");
    item.value = e.version;
    item.textContent = e.text;
    timeline.appendChild(item);
    refresh();
  });
  // A refusal (the session ended, the case is not the principal's) is final: stop.
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      source.close();
    }
  });
})();
