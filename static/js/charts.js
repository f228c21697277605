// The queue page's charts (Chart.js, served by the dashboard itself). Each live region carries
// its data as a json_script; the charts sit outside the regions and are redrawn in place when a
// refresh brings new data, so they never flicker or lose their size.
"use strict";

const charts = new Map();

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function readData(id) {
  const element = document.getElementById(id);
  return element ? JSON.parse(element.textContent) : null;
}

// One format on every axis and in every tooltip, the one the tables use (to the minute), in the
// zone the header's switch chose (interface.js).
function timeLabels(isoTimes) {
  return isoTimes.map((iso) => window.dashboardTimes.text(new Date(iso), { seconds: false }));
}

function humanSeconds(value) {
  if (value == null) return "";
  if (value < 60) return `${Math.round(value)} s`;
  if (value < 600) return `${+(value / 60).toFixed(1)} min`;
  if (value < 3600) return `${Math.round(value / 60)} min`;
  if (value < 86400) return `${+(value / 3600).toFixed(1)} h`;
  return `${+(value / 86400).toFixed(1)} d`;
}

function baseOptions(extra = {}) {
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    interaction: { mode: "index", intersect: false },
    plugins: { legend: { labels: { boxWidth: 12 } } },
    scales: { x: { ticks: { maxTicksLimit: 8, autoSkip: true } }, y: { beginAtZero: true } },
    ...extra,
  };
}

// A canvas is a picture to a screen reader: its label says in words what the chart shows now.
function describe(config) {
  const format = config.options.scales?.y?.ticks?.callback ?? ((value) => String(+value.toFixed(2)));
  const { labels, datasets } = config.data;
  if (config.type === "bar" && datasets.length === 1) {
    return labels.map((label, index) => `${label}: ${format(datasets[0].data[index] ?? 0)}`).join(", ");
  }
  return `From ${labels[0]} to ${labels.at(-1)}: ` + datasets.map((dataset) => {
    const values = dataset.data.filter((value) => value != null);
    if (!values.length) return `${dataset.label}: no data`;
    return `${dataset.label} now ${format(values.at(-1))}, lowest ${format(Math.min(...values))}, `
      + `highest ${format(Math.max(...values))}`;
  }).join("; ");
}

function draw(name, makeConfig, empty) {
  const canvas = document.querySelector(`canvas[data-chart="${name}"]`);
  if (!canvas) return;
  const note = document.querySelector(`[data-chart-empty="${name}"]`);
  if (note) note.hidden = !empty;
  canvas.hidden = empty;
  const existing = charts.get(name);
  if (empty) {
    existing?.destroy();
    charts.delete(name);
    return;
  }
  const config = makeConfig();
  canvas.dataset.what ??= canvas.getAttribute("aria-label");
  canvas.setAttribute("aria-label", `${canvas.dataset.what}. ${describe(config)}.`);
  if (existing && existing.canvas === canvas) {
    existing.data = config.data;
    existing.update("none");
    return;
  }
  existing?.destroy();
  charts.set(name, new Chart(canvas, config));
}

// Straight segments (tension 0: a curve would invent values between samples) that stop where the
// sampler stored nothing (spanGaps false, the bucket null): a gap is drawn as a gap.
function line(label, data, color, fill = false, extra = {}) {
  return {
    label, data, borderColor: color, backgroundColor: color + "55", fill, pointRadius: 0, borderWidth: 2,
    tension: 0, spanGaps: false, ...extra,
  };
}

// A bucket's highest or lowest, dashed, in a stack of its own (not added onto the means).
function bound(label, data, color) {
  return line(label, data, color, false, { borderDash: [4, 3], borderWidth: 1, stack: label });
}

function anyValue(values) {
  return values.some((value) => value != null);
}

function bars(label, data, color) {
  return { label, data, backgroundColor: color, borderRadius: 3 };
}

function drawQueueCharts() {
  const data = readData("queue-chart-data");
  if (!data) return;
  const history = data.history;
  const labels = timeLabels(history.labels);
  const stacked = { stack: "means" };
  draw("backlog", () => ({
    type: "line",
    data: {
      labels,
      datasets: [
        line("Visible", history.visible, cssVar("--visible"), true, stacked),
        line("In flight", history.in_flight, cssVar("--in-flight"), true, stacked),
        line("Delayed", history.delayed, cssVar("--delayed"), true, stacked),
        bound("Backlog, highest", history.backlog_max, cssVar("--critical")),
        bound("Backlog, lowest", history.backlog_min, cssVar("--muted")),
      ],
    },
    options: baseOptions({ scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { stacked: true, beginAtZero: true } } }),
  }), !anyValue(history.backlog_max));
  draw("rates", () => ({
    type: "line",
    data: {
      labels,
      datasets: [
        line("Sent /s", history.enqueue_rate, cssVar("--accent")),
        line("Archived or deleted /s", history.processing_rate, cssVar("--visible")),
        bound("Sent /s, highest", history.enqueue_rate_max, cssVar("--accent")),
        bound("Archived or deleted /s, highest", history.processing_rate_max, cssVar("--visible")),
      ],
    },
    options: baseOptions(),
  }), !anyValue(history.enqueue_rate) && !anyValue(history.processing_rate));
  const empty = (counts) => counts.every((count) => count === 0);
  draw("age", () => ({
    type: "bar",
    data: { labels: data.age.labels, datasets: [bars("Messages", data.age.counts, cssVar("--accent"))] },
    options: baseOptions({ plugins: { legend: { display: false } } }),
  }), empty(data.age.counts));
  draw("read_ct", () => ({
    type: "bar",
    data: { labels: data.read_ct.labels, datasets: [bars("Messages", data.read_ct.counts, cssVar("--delayed"))] },
    options: baseOptions({ plugins: { legend: { display: false } } }),
  }), empty(data.read_ct.counts));
}

function drawArchiveCharts() {
  const data = readData("archive-chart-data");
  if (!data) return;
  const labels = timeLabels(data.labels);
  draw("archived", () => ({
    type: "bar",
    data: { labels, datasets: [bars("Archived", data.archived, cssVar("--visible"))] },
    options: baseOptions({ plugins: { legend: { display: false } } }),
  }), data.labels.length === 0);
  draw("latency", () => ({
    type: "line",
    data: {
      labels,
      datasets: [
        line("p50", data.p50, cssVar("--visible")),
        line("p95", data.p95, cssVar("--warning")),
        line("p99", data.p99, cssVar("--critical")),
      ],
    },
    options: baseOptions({
      scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { beginAtZero: true, ticks: { callback: humanSeconds } } },
      plugins: { tooltip: { callbacks: { label: (item) => `${item.dataset.label}: ${humanSeconds(item.raw)}` } } },
    }),
  }), data.labels.length === 0);
}

function drawAll() {
  if (!window.Chart) return;
  Chart.defaults.color = cssVar("--muted");
  Chart.defaults.borderColor = cssVar("--border");
  drawQueueCharts();
  drawArchiveCharts();
}

document.addEventListener("DOMContentLoaded", drawAll);
document.addEventListener("dashboard:updated", drawAll);
function redrawAll() {
  charts.forEach((chart) => chart.destroy());
  charts.clear();
  drawAll();
}
// The theme follows the system: redraw in the new colours when it changes; and in the other time
// zone when the header's switch is pressed.
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redrawAll);
document.addEventListener("dashboard:time-zone", redrawAll);
