// reaper dashboard: live progress of the running jobs on the page (polling /ui/live every
// second) and the job page's chart (SVG drawn here from /ui/jobs/{id}/series). No library.
"use strict";

function liveRows() {
  return Array.from(document.querySelectorAll("[data-job][data-live]"));
}

function setField(row, name, value) {
  const field = row.querySelector('[data-field="' + name + '"]');
  if (!field || value === undefined || value === null) return;
  if (name === "progress") {
    // A job's progress is known once it has an estimate of its matching rows; until then the
    // bar stays hidden (an empty or full bar would say something false).
    field.value = value;
    field.textContent = value + "%";
    field.hidden = false;
    const note = row.querySelector('[data-field="no-estimate"]');
    if (note) note.remove();
  } else {
    field.textContent = value;
    if (name === "state") field.className = "badge " + value;
  }
}

async function poll() {
  const rows = liveRows();
  if (rows.length === 0) return;
  const ids = rows.map((row) => row.dataset.job).slice(0, 100).join(",");
  try {
    const response = await fetch("/ui/live?ids=" + encodeURIComponent(ids), { credentials: "same-origin" });
    if (!response.ok) return;
    const jobs = await response.json();
    for (const row of rows) {
      const job = jobs[row.dataset.job];
      if (!job) continue;
      for (const name of ["state", "progress", "rows", "rate", "eta", "batches"]) setField(row, name, job[name]);
      if (!job.live) delete row.dataset.live;
    }
    const chart = document.querySelector(".chart[data-series]");
    if (chart) drawChart(chart);
  } catch (error) {
    // The daemon may be restarting; the next poll tries again.
  }
}

function svg(name, attributes) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

async function drawChart(figure) {
  const response = await fetch(figure.dataset.series, { credentials: "same-origin" });
  if (!response.ok) return;
  const points = await response.json();
  const plot = figure.querySelector("svg");
  for (const old of Array.from(plot.querySelectorAll("rect, path, text"))) old.remove();
  if (points.length === 0) {
    plot.appendChild(svg("text", { x: 10, y: 20 })).textContent = "No batch yet.";
    return;
  }
  const width = 600, height = 200, top = 14, bottom = 16;
  const maxRows = Math.max(...points.map((p) => p.rows), 1);
  const maxSeconds = Math.max(...points.map((p) => p.seconds), 0.001);
  const step = width / points.length;
  const y = (value, max) => height - bottom - (value / max) * (height - top - bottom);
  let line = "";
  points.forEach((point, index) => {
    const x = index * step;
    const bar = svg("rect", { class: "bar", x: x + step * 0.1, width: Math.max(step * 0.8, 0.5), y: y(point.rows, maxRows), height: height - bottom - y(point.rows, maxRows) });
    bar.appendChild(svg("title", {})).textContent = "batch " + point.batch + ": " + point.rows + " rows, " + point.seconds.toFixed(3) + " s";
    plot.appendChild(bar);
    line += (index === 0 ? "M" : "L") + (x + step / 2).toFixed(1) + " " + y(point.seconds, maxSeconds).toFixed(1);
  });
  plot.appendChild(svg("path", { class: "line", d: line }));
  plot.appendChild(svg("text", { x: 4, y: 11 })).textContent = maxRows + " rows";
  plot.appendChild(svg("text", { x: width - 4, y: 11, "text-anchor": "end" })).textContent = maxSeconds.toFixed(2) + " s";
  plot.appendChild(svg("text", { x: 4, y: height - 3 })).textContent = "batch " + points[0].batch;
  plot.appendChild(svg("text", { x: width - 4, y: height - 3, "text-anchor": "end" })).textContent = "batch " + points[points.length - 1].batch;
}

document.addEventListener("DOMContentLoaded", () => {
  const chart = document.querySelector(".chart[data-series]");
  if (chart) drawChart(chart);
  setInterval(poll, 1000);
});
