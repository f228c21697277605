// Behaviour shared by every page. No inline scripts anywhere: everything lives in static files.
"use strict";

// Live regions poll with hx-trigger="every Ns"; a hidden tab polls nothing, and catches up on return.
document.addEventListener("htmx:beforeRequest", (event) => {
  const polling = event.detail.requestConfig && event.detail.requestConfig.triggeringEvent == null;
  if (document.hidden && polling) {
    event.preventDefault();
  }
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && window.htmx) {
    document.querySelectorAll("[hx-trigger^='every']").forEach((region) => htmx.trigger(region, "refresh"));
  }
});
