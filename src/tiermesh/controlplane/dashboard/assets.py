"""The dashboard's stylesheet and script, served from the control plane itself (nothing is
fetched from elsewhere at run time).

The script polls ``/api/dashboard`` every ``data-poll-ms`` milliseconds and swaps the
server-rendered ``html`` it carries into ``<main>``: all escaping stays on the server
(:mod:`.render`). A failed poll marks the page stale and is retried at the next tick.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ICON", "SCRIPT", "STYLESHEET"]

SCRIPT: Final = """\
"use strict";
(function () {
  var period = parseInt(document.body.getAttribute("data-poll-ms"), 10) || 2000;
  var live = document.getElementById("live");
  var main = document.getElementById("main");
  function tick() {
    fetch("/api/dashboard", {cache: "no-store", credentials: "same-origin"})
      .then(function (answer) {
        if (!answer.ok) { throw new Error("HTTP " + answer.status); }
        return answer.json();
      })
      .then(function (doc) {
        main.innerHTML = doc.html;
        live.textContent = "live";
        live.className = "live";
      })
      .catch(function (problem) {
        live.textContent = "stale (" + problem.message + ")";
        live.className = "live stale";
      })
      .finally(function () { window.setTimeout(tick, period); });
  }
  window.setTimeout(tick, period);
})();
"""

STYLESHEET: Final = """\
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f4f6f9; }
header { display: flex; gap: 1em; align-items: baseline; padding: .6em 1.2em;
  background: #1d2330; color: #fff; }
header h1 { margin: 0; font-size: 20px; }
.domain { opacity: .8; }
.live { margin-left: auto; font-size: 12px; padding: .1em .6em; border-radius: 1em;
  background: #2e7d32; }
.live.stale { background: #c62828; }
main { padding: .4em 1.2em 2em; display: grid; gap: 1em; }
section { background: #fff; border-radius: 6px; padding: .4em 1em .8em;
  box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { font-size: 15px; margin: .4em 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #e3e7ee;
  vertical-align: top; }
td[data-figure] { font-variant-numeric: tabular-nums; }
.stamp { margin: 0; font-size: 12px; color: #5b6475; }
.health.healthy, .svid.verified, .ok { color: #2e7d32; font-weight: 600; }
.health.unhealthy, .exhausted, .audit.fail { color: #c62828; font-weight: 600; }
.audit.ok { color: #2e7d32; }
.xds { display: inline-block; margin: 0 .3em .2em 0; padding: 0 .4em; border-radius: 3px;
  font-size: 12px; background: #e3e7ee; }
.xds.ack { background: #c8e6c9; }
.xds.nack { background: #ffcdd2; }
.xds.pending { background: #fff3c4; }
.meter { display: inline-block; width: 8em; height: .7em; background: #e3e7ee;
  border-radius: 3px; overflow: hidden; vertical-align: middle; }
.meter span { display: block; height: 100%; background: #5c6bc0; }
.minutes { display: flex; align-items: flex-end; gap: 3px; height: 60px; margin-top: .6em; }
.bar { width: 12px; height: 100%; display: flex; flex-direction: column-reverse; }
.seg.local { background: #66bb6a; } .seg.private { background: #42a5f5; }
.seg.cloud { background: #ab47bc; }
.legend { margin: .6em 0 0; font-size: 12px; color: #5b6475; }
.key { margin-left: .6em; } .key::before { content: ""; display: inline-block; width: .8em;
  height: .8em; margin-right: .25em; vertical-align: -1px; }
.key.local::before { background: #66bb6a; } .key.private::before { background: #42a5f5; }
.key.cloud::before { background: #ab47bc; }
.reasons { margin: .4em 0 0; padding-left: 1.2em; font-size: 13px; }
.decisions td.id { font: 12px ui-monospace, monospace; color: #5b6475; }
.decisions td.reason { max-width: 36em; overflow-wrap: anywhere; font-size: 12px; }
.outcome-deny td { color: #c62828; }
dl.provenance { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em;
  margin: 0; font-size: 13px; }
dl.provenance dt { color: #5b6475; }
"""

ICON: Final = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#1d2330"/>'
    '<rect x="3" y="9" width="2" height="4" fill="#66bb6a"/>'
    '<rect x="7" y="6" width="2" height="7" fill="#42a5f5"/>'
    '<rect x="11" y="3" width="2" height="10" fill="#ab47bc"/></svg>'
)
"""The page's icon (so the browser asks for nothing the server lacks)."""
