// Behaviour shared by every page. No inline scripts anywhere: everything lives in static files.
"use strict";

// Live refresh -------------------------------------------------------------------------------
// Every element marked data-live re-renders itself (hx-trigger="refresh") on one timer per page.
// The interval is each user's choice (kept in localStorage); nothing polls while the page is
// paused or the tab is hidden, and a hidden tab catches up as soon as it is shown again.
const REFRESH_KEY = "pgmq-dashboard.refresh-seconds";
const refresh = {
  seconds: 5,
  paused: false,
  timer: null,
  lastUpdate: Date.now(),
  failed: null,
  ticks: 0,
};

function liveRegions() {
  return document.querySelectorAll("[data-live]");
}

// Heavier regions (data-refresh-every="6") refresh on every 6th tick only.
function refreshNow({ everything = false, evenPaused = false } = {}) {
  if ((refresh.paused && !evenPaused) || document.hidden) return;
  refresh.ticks += 1;
  liveRegions().forEach((region) => {
    const every = Number(region.dataset.refreshEvery) || 1;
    if (everything || refresh.ticks % every === 0) htmx.trigger(region, "refresh");
  });
}

function schedule() {
  clearInterval(refresh.timer);
  refresh.timer = setInterval(refreshNow, refresh.seconds * 1000);
}

function showUpdated() {
  const age = Math.round((Date.now() - refresh.lastUpdate) / 1000);
  document.querySelectorAll("[data-updated]").forEach((label) => {
    if (refresh.failed) {
      label.textContent = refresh.failed;
      label.classList.add("failing");
    } else {
      label.textContent = refresh.paused ? `paused; updated ${age} s ago` : `updated ${age} s ago`;
      label.classList.remove("failing");
    }
  });
}

function setUpRefreshControls() {
  if (!liveRegions().length) {
    document.querySelectorAll("[data-refresh-controls]").forEach((controls) => (controls.hidden = true));
    return;
  }
  const fallback = Number(document.body.dataset.refreshDefault) || 5;
  refresh.seconds = Number(localStorage.getItem(REFRESH_KEY)) || fallback;
  document.querySelectorAll("[data-refresh-interval]").forEach((select) => {
    if (![...select.options].some((option) => Number(option.value) === refresh.seconds)) {
      select.add(new Option(`every ${refresh.seconds} s`, String(refresh.seconds)), 0);
    }
    select.value = String(refresh.seconds);
    select.addEventListener("change", () => {
      refresh.seconds = Number(select.value);
      localStorage.setItem(REFRESH_KEY, select.value);
      schedule();
    });
  });
  document.querySelectorAll("[data-refresh-pause]").forEach((button) => {
    button.addEventListener("click", () => {
      refresh.paused = !refresh.paused;
      button.setAttribute("aria-pressed", String(refresh.paused));
      button.textContent = refresh.paused ? "Resume" : "Pause";
      if (!refresh.paused) refreshNow({ everything: true });
      showUpdated();
    });
  });
  schedule();
  setInterval(showUpdated, 1000);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && Date.now() - refresh.lastUpdate > refresh.seconds * 1000) refreshNow({ everything: true });
  });
}

// A refresh must not cost the user what they were doing: the rows they ticked, the rows they
// opened, the scroll position inside a region, the field they were typing in.
const keptState = new Map();

function rememberState(region) {
  keptState.set(region.id, {
    checked: [...region.querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value),
    open: [...region.querySelectorAll("details[open][id]")].map((details) => details.id),
    scroll: [...region.querySelectorAll("[data-keep-scroll][id]")].map((el) => [el.id, el.scrollTop]),
    focused: region.contains(document.activeElement) ? document.activeElement.id : null,
  });
}

function restoreState(region) {
  const state = keptState.get(region.id);
  if (!state) return;
  region.querySelectorAll("input[type=checkbox]").forEach((box) => {
    box.checked = state.checked.includes(box.value);
  });
  state.open.forEach((id) => document.getElementById(id)?.setAttribute("open", ""));
  state.scroll.forEach(([id, top]) => {
    const element = document.getElementById(id);
    if (element) element.scrollTop = top;
  });
  if (state.focused) document.getElementById(state.focused)?.focus();
  keptState.delete(region.id);
}

document.addEventListener("htmx:beforeSwap", (event) => {
  const region = event.detail.target;
  // Two refreshes of one region can overlap on a slow link: the first one's state is the user's;
  // the second would remember the not yet restored swap (scrolled to the top, rows closed).
  if (event.detail.shouldSwap && region.matches("[data-live]") && !keptState.has(region.id)) rememberState(region);
});
document.addEventListener("htmx:afterSettle", (event) => {
  const region = event.detail.target && document.getElementById(event.detail.target.id);
  if (region && region.matches("[data-live]")) {
    restoreState(region);
    refresh.lastUpdate = Date.now();
    clearFault();
    showUpdated();
    document.dispatchEvent(new CustomEvent("dashboard:updated", { detail: { region } }));
  }
});

// When a refresh fails ----------------------------------------------------------------------
// The page keeps what it last showed, greyed out, under a banner saying why: the notice of the
// error page the dashboard answered (the database is not reachable, pgmq is not installed, the
// queue is gone), or that the dashboard itself does not answer. Refreshing goes on, and the first
// refresh that succeeds clears it all: the dashboard reconnects by itself once the database is
// back. A region that answers 404 (its queue was dropped) is not asked again.
function showFault({ title, details, severity, label }) {
  let banner = document.querySelector("[data-live-fault]");
  if (!banner) {
    banner = document.createElement("div");
    banner.dataset.liveFault = "";
    banner.setAttribute("role", "alert");
    document.querySelector("main").prepend(banner);
  }
  banner.className = `banner ${severity} live-fault`;
  const heading = document.createElement("strong");
  heading.textContent = title;
  banner.replaceChildren(heading, ...details);
  document.querySelectorAll("[data-live], [data-gone]").forEach((region) => region.classList.add("stale"));
  refresh.failed = label;
  showUpdated();
}

function clearFault() {
  if (!refresh.failed || document.querySelector("[data-gone]")) return;
  document.querySelector("[data-live-fault]")?.remove();
  document.querySelectorAll(".stale").forEach((region) => region.classList.remove("stale"));
  refresh.failed = null;
}

function paragraph(...nodes) {
  const element = document.createElement("p");
  element.append(...nodes);
  return element;
}

// What an error page says, from its .notice: the heading, then its paragraphs and list items
// (links kept). The page is the dashboard's own, rendered with every value escaped.
function noticeOf(xhr) {
  const page = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
  const notice = page.querySelector(".notice");
  const heading = notice?.querySelector("h1, h2");
  if (!heading) return { title: `The dashboard answered HTTP ${xhr.status}`, details: [] };
  const details = [...notice.querySelectorAll("p, li")].map((item) =>
    paragraph(...[...item.childNodes].map((node) => document.importNode(node, true))));
  return { title: heading.textContent.trim(), details };
}

document.addEventListener("htmx:responseError", (event) => {
  const region = event.detail.elt;
  if (!region.matches("[data-live]")) return;
  const status = event.detail.xhr.status;
  const { title, details } = noticeOf(event.detail.xhr);
  if (status === 404) {
    region.removeAttribute("data-live");
    region.dataset.gone = "";
    showFault({ title, details, severity: "warning", label: `${title} (HTTP 404): no longer refreshed` });
  } else {
    showFault({ title, details, severity: "critical", label: `${title} (HTTP ${status}); retrying` });
  }
});
document.addEventListener("htmx:sendError", (event) => {
  if (!event.detail.elt.matches("[data-live]")) return;
  showFault({
    title: "The dashboard does not answer",
    details: [paragraph("Its server may be restarting or out of reach. This page keeps trying by itself.")],
    severity: "critical",
    label: "no answer from the dashboard; retrying",
  });
});

// Keyboard: "/" goes to the search field of the page.
document.addEventListener("keydown", (event) => {
  const typing = event.target.closest("input, textarea, select, [contenteditable]");
  if (event.key === "/" && !typing) {
    const search = document.querySelector("[data-search-shortcut]");
    if (search) {
      event.preventDefault();
      const fold = search.closest("details:not([open])");
      if (fold) fold.open = true; // the message filters fold away once applied
      search.focus();
    }
  }
});

document.addEventListener("DOMContentLoaded", setUpRefreshControls);
// "r" (interface.js): every live region now, paused or not.
document.addEventListener("dashboard:refresh-now", () => refreshNow({ everything: true, evenPaused: true }));

// Copy buttons: data-copy-json names a json_script holding the JSON's text as PostgreSQL wrote it
// (copied as is: parsing it would round big or precise numbers), data-copy-text an element whose
// text is copied as it is.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy-json], [data-copy-text]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copyJson || button.dataset.copyText);
  const text = button.dataset.copyJson ? JSON.parse(source.textContent) : source.textContent;
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed: select and copy by hand";
  }
  setTimeout(() => (button.textContent = label), 2000);
});

// Countdowns (data-countdown="seconds", computed by the database's clock): the browser only
// counts down from there.
function startCountdowns() {
  const started = Date.now();
  const countdowns = [...document.querySelectorAll("[data-countdown]")];
  if (!countdowns.length) return;
  const tick = () => {
    countdowns.forEach((element) => {
      const left = Number(element.dataset.countdown) - (Date.now() - started) / 1000;
      element.textContent = left > 0 ? `${Math.ceil(left)} s` : "now";
    });
  };
  tick();
  setInterval(tick, 1000);
}
document.addEventListener("DOMContentLoaded", startCountdowns);
