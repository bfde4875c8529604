// The console's own script: copy buttons, the live tail (server-sent events) and the Insights chart (uPlot).
// No inline scripts anywhere (the Content-Security-Policy allows scripts from the hub only).
"use strict";

function copyButtons(root) {
  root.querySelectorAll("button[data-copy]").forEach(function (button) {
    if (button.dataset.bound) return;
    button.dataset.bound = "1";
    button.addEventListener("click", function () {
      var source = document.getElementById(button.dataset.copy);
      if (!source) return;
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 1500);
      });
    });
  });
}

function cell(text, className) {
  var td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function liveTail() {
  var toggle = document.getElementById("tail-toggle");
  if (!toggle) return;
  var body = document.querySelector("#tail tbody");
  var state = document.getElementById("tail-state");
  var source = null;
  var keep = 200;
  function stop(message) {
    if (source) source.close();
    source = null;
    toggle.textContent = "Start";
    if (message) state.textContent = message;
  }
  toggle.addEventListener("click", function () {
    if (source) { stop("Stopped."); return; }
    source = new EventSource(toggle.dataset.tail);
    toggle.textContent = "Stop";
    state.textContent = "Listening…";
    source.addEventListener("audit", function (e) {
      var r = JSON.parse(e.data);
      var tr = document.createElement("tr");
      tr.className = "outcome-" + r.outcome;
      tr.dataset.correlation = r.correlation_id;
      tr.appendChild(cell(r.time));
      tr.appendChild(cell(r.outcome, "badge outcome-" + r.outcome));
      tr.appendChild(cell(r.method + " " + r.path));
      tr.appendChild(cell((r.from || "—") + " → " + (r.to || "—")));
      tr.appendChild(cell(r.status + (r.ocpi_status ? "/" + r.ocpi_status : "")));
      tr.appendChild(cell(r.latency_ms.toFixed(1) + " ms"));
      var link = document.createElement("a");
      link.href = "/console/messages/trail?id=" + encodeURIComponent(r.correlation_id);
      link.textContent = r.correlation_id;
      var td = document.createElement("td");
      td.appendChild(link);
      tr.appendChild(td);
      body.insertBefore(tr, body.firstChild);
      while (body.rows.length > keep) body.deleteRow(body.rows.length - 1);
      state.textContent = "Live: " + body.rows.length + " shown.";
    });
    source.addEventListener("ended", function () { stop("Your session ended; log in again to follow the traffic."); });
    source.onerror = function () {
      if (source && source.readyState === EventSource.CLOSED) stop("The hub closed the stream (logged out?).");
    };
  });
}

function insightsChart() {
  var box = document.getElementById("chart");
  if (!box || typeof uPlot === "undefined") return;
  var data = JSON.parse(document.getElementById(box.dataset.chart).textContent);
  var colors = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#6b7280"];
  var series = [{}];
  var columns = [data.x];
  data.series.forEach(function (s, i) {
    series.push({label: s.label, stroke: colors[i % colors.length], width: 2, points: {show: true}});
    columns.push(s.values);
  });
  if (data.series.length === 0) {
    box.textContent = "Nothing to draw yet.";
    return;
  }
  new uPlot({width: Math.max(480, box.clientWidth || 900), height: 280, series: series,
             axes: [{}, {label: "kWh"}], scales: {x: {time: true}}}, columns, box);
  box.dataset.drawn = "1";
}

document.addEventListener("DOMContentLoaded", function () {
  copyButtons(document);
  liveTail();
  insightsChart();
});
document.addEventListener("htmx:afterSwap", function (e) { copyButtons(e.target); });
