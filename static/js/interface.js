// Keyboard shortcuts and the time zone of timestamps: conveniences of every page.
"use strict";

// Timestamps --------------------------------------------------------------------------------------
// The server writes every moment in UTC, as <time datetime="ISO">. The switch in the header shows
// them in the browser's time zone instead (kept per browser); hovering shows both, and how long ago.
const ZONE_KEY = "pgmq-dashboard:time-zone";

function pad(number, width = 2) {
  return String(number).padStart(width, "0");
}

function localText(moment, withFraction) {
  const text = `${moment.getFullYear()}-${pad(moment.getMonth() + 1)}-${pad(moment.getDate())} `
    + `${pad(moment.getHours())}:${pad(moment.getMinutes())}:${pad(moment.getSeconds())}`;
  return withFraction ? `${text}.${pad(moment.getMilliseconds(), 3)}` : text;
}

function utcText(moment, withFraction) {
  return moment.toISOString().slice(0, withFraction ? 23 : 19).replace("T", " ");
}

function localChosen() {
  return localStorage.getItem(ZONE_KEY) === "local";
}

// For the charts (charts.js): a moment as the tables write it, in the zone chosen.
window.dashboardTimes = {
  text(moment, { seconds = true } = {}) {
    const text = localChosen() ? localText(moment, false) : utcText(moment, false);
    return seconds ? text : text.slice(0, 16);
  },
  zoneName() {
    return localChosen() ? Intl.DateTimeFormat().resolvedOptions().timeZone : "UTC";
  },
};

function ago(moment) {
  const seconds = Math.round((Date.now() - moment) / 1000);
  const size = Math.abs(seconds);
  const amount = size < 90 ? `${size} s` : size < 5400 ? `${Math.round(size / 60)} min`
    : size < 172800 ? `${Math.round(size / 3600)} h` : `${Math.round(size / 86400)} d`;
  return seconds >= 0 ? `${amount} ago` : `in ${amount}`;
}

function showTimes(root = document) {
  const local = localChosen();
  root.querySelectorAll("time[datetime]").forEach((element) => {
    const moment = new Date(element.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime())) return;
    element.dataset.utc ??= element.textContent;
    element.dataset.utcTitle ??= element.title || element.dataset.utc;
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    element.textContent = local ? localText(moment, element.dataset.utc.includes(".")) : element.dataset.utc;
    element.title = `${element.dataset.utcTitle} · ${localText(moment, true)} ${zone} · ${ago(moment)}`;
  });
  // The date filters take times as the tables show them, in the zone chosen (the form sends it).
  const zone = window.dashboardTimes.zoneName();
  root.querySelectorAll("[data-zone-name]").forEach((element) => { element.textContent = zone; });
  root.querySelectorAll("[data-zone-field]").forEach((field) => {
    field.value = local ? zone : "";
    field.disabled = !local;
  });
  document.querySelectorAll("[data-time-zone]").forEach((button) => {
    button.textContent = local ? "Local time" : "UTC";
    button.setAttribute("aria-pressed", String(local));
  });
}

document.addEventListener("click", (event) => {
  if (!event.target.closest("[data-time-zone]")) return;
  localStorage.setItem(ZONE_KEY, localChosen() ? "utc" : "local");
  showTimes();
  document.dispatchEvent(new CustomEvent("dashboard:time-zone"));
});
document.addEventListener("DOMContentLoaded", () => showTimes());
document.addEventListener("htmx:afterSettle", (event) => showTimes(event.detail.elt));

// Keyboard ----------------------------------------------------------------------------------------
// j / k: next / previous row of the page's table; Enter or o: open it; x: tick its checkbox;
// g then o / a / l: the overview, alerts, audit log (the header's links, so in this database);
// r: refresh the live regions now; [ / ]: the pager's previous / next page;
// ?: the list of shortcuts. ("/" to search is in dashboard.js.)
const G_WAIT_MS = 1500;
let gPressedAt = 0;

function follow(selector) {
  const link = document.querySelector(selector);
  if (!link) return false;
  link.click();
  return true;
}
function rows() {
  return [...document.querySelectorAll("main table tbody tr")].filter((row) => row.querySelector("a, input"));
}

function moveCurrent(step) {
  const all = rows();
  if (!all.length) return;
  const current = document.querySelector("tr.keyboard-current");
  const index = current ? all.indexOf(current) : -1;
  const next = all[Math.min(Math.max(index + step, 0), all.length - 1)];
  current?.classList.remove("keyboard-current");
  next.classList.add("keyboard-current");
  next.scrollIntoView({ block: "nearest" });
}

document.addEventListener("click", (event) => {
  if (event.target.closest("[data-show-shortcuts]")) document.getElementById("shortcuts").showModal();
});

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest("input, textarea, select, [contenteditable]")) return;
  if (document.querySelector("dialog[open]:not(#shortcuts)")) return;
  const current = document.querySelector("tr.keyboard-current");
  const afterG = Date.now() - gPressedAt < G_WAIT_MS;
  gPressedAt = 0;
  if (afterG && ["o", "a", "l"].includes(event.key)) {
    if (!follow(`.topnav [data-go="${event.key}"]`)) return;
  } else if (event.key === "g") {
    gPressedAt = Date.now();
  } else if (event.key === "r") {
    document.dispatchEvent(new CustomEvent("dashboard:refresh-now"));
  } else if (event.key === "[" || event.key === "]") {
    if (!follow(`main nav.pager a[rel="${event.key === "[" ? "prev" : "next"}"]`)) return;
  } else if (event.key === "j" || event.key === "k") {
    moveCurrent(event.key === "j" ? 1 : -1);
  } else if ((event.key === "Enter" || event.key === "o") && current) {
    current.querySelector("a")?.click();
  } else if (event.key === "x" && current) {
    current.querySelector("input[type=checkbox]")?.click();
  } else if (event.key === "?") {
    const help = document.getElementById("shortcuts");
    if (help.open) help.close(); else help.showModal();
  } else {
    return;
  }
  event.preventDefault();
});
// A refresh replaces the rows: the current one is found again by its data attributes (its msg_id
// and source, its queue, its audit entry).
let currentRowKey = "";
document.addEventListener("htmx:beforeSwap", () => {
  const current = document.querySelector("tr.keyboard-current");
  currentRowKey = current ? JSON.stringify(current.dataset) : "";
});
document.addEventListener("htmx:afterSettle", () => {
  if (!currentRowKey) return;
  rows().find((row) => JSON.stringify(row.dataset) === currentRowKey)?.classList.add("keyboard-current");
});

// Scrolling panels --------------------------------------------------------------------------------
// A panel wider than the screen (a table on a phone) scrolls sideways, a long JSON scrolls down;
// with no link or field in it, it could not be scrolled from the keyboard, so while it overflows
// it takes the focus itself. (Set on htmx:afterSwap, before dashboard.js gives a refreshed region
// its focus back.)
function focusableWhenScrolling() {
  document.querySelectorAll(".panel, pre").forEach((box) => {
    const overflows = box.scrollWidth > box.clientWidth || box.scrollHeight > box.clientHeight;
    if (overflows && !box.hasAttribute("tabindex")) {
      box.setAttribute("tabindex", "0");
      box.dataset.scrollFocus = "";
    } else if (!overflows && "scrollFocus" in box.dataset) {
      box.removeAttribute("tabindex");
      delete box.dataset.scrollFocus;
    }
  });
}
document.addEventListener("DOMContentLoaded", focusableWhenScrolling);
document.addEventListener("htmx:afterSwap", focusableWhenScrolling);
window.addEventListener("resize", focusableWhenScrolling);

// Explanations (queues/_explain.html) ------------------------------------------------------------
// An ⓘ opens its figure's explanation on a click or tap and on keyboard focus, closes on a second
// click, on Escape and when focus leaves; one stays open across a live region's refresh.
const openExplanations = new Set();
let pointerDown = false;

function setExplained(button, open) {
  const text = document.getElementById(button.getAttribute("aria-controls"));
  if (!text) return;
  button.setAttribute("aria-expanded", String(open));
  text.hidden = !open;
  if (open) openExplanations.add(text.id); else openExplanations.delete(text.id);
}

document.addEventListener("pointerdown", (event) => {
  pointerDown = Boolean(event.target.closest(".explain-button"));
});
document.addEventListener("click", (event) => {
  const button = event.target.closest(".explain-button");
  if (!button) return;
  pointerDown = false;
  setExplained(button, button.getAttribute("aria-expanded") !== "true");
});
document.addEventListener("focusin", (event) => {
  const button = event.target.closest?.(".explain-button");
  // A tap focuses before it clicks: the click opens it, or it would open and close at once.
  if (button && !pointerDown) setExplained(button, true);
});
document.addEventListener("focusout", (event) => {
  const button = event.target.closest?.(".explain-button");
  if (button) setExplained(button, false);
});
document.addEventListener("keydown", (event) => {
  const button = event.target.closest?.(".explain-button");
  if (event.key === "Escape" && button) setExplained(button, false);
});
document.addEventListener("htmx:afterSettle", () => {
  openExplanations.forEach((id) => {
    const button = document.querySelector(`.explain-button[aria-controls="${CSS.escape(id)}"]`);
    if (button) setExplained(button, true); else openExplanations.delete(id);
  });
});

// Filters on a phone --------------------------------------------------------------------------------
// A form of filters open by default takes a phone's whole first screen: there it starts folded to
// its one-line summary, and a tap opens it. (The breakpoint is dashboard.css's.)
function foldFiltersOnPhones() {
  if (!window.matchMedia("(max-width: 700px)").matches) return;
  document.querySelectorAll("details[data-fold-on-phone][open]").forEach((fold) => fold.removeAttribute("open"));
}
document.addEventListener("DOMContentLoaded", foldFiltersOnPhones);
