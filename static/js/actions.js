// Acting on messages: selecting rows, the confirmation dialog, and the JSON editors.
"use strict";

// Selection -----------------------------------------------------------------------------------
// The checkboxes live in the refreshing list but belong to the action form (form="action-form"),
// so a refresh keeps them ticked (dashboard.js restores them) and the form sends them.
let lastClicked = null;

function actionForm() {
  return document.querySelector("[data-action-form]");
}

function rowBoxes() {
  return [...document.querySelectorAll("input[type=checkbox][name=msg_id][form=action-form]")];
}

function matchingEverything() {
  return actionForm()?.querySelector("[data-scope]").value === "matching";
}

function updateSelection() {
  const form = actionForm();
  if (!form) return;
  const chosen = rowBoxes().filter((box) => box.checked).length;
  const count = form.querySelector("[data-selection-count]");
  const everything = matchingEverything();
  count.textContent = everything
    ? "Every message matching the filters is selected"
    : chosen ? `${chosen} selected` : "Select messages to act on them";
  const toggle = form.querySelector("[data-select-matching]");
  toggle.dataset.label ||= toggle.textContent;
  toggle.textContent = everything ? "Back to choosing messages one by one" : toggle.dataset.label;
  form.querySelectorAll("[data-needs-selection]").forEach((button) => (button.disabled = !everything && !chosen));
  const pageBox = document.querySelector("[data-select-page]");
  if (pageBox) {
    const boxes = rowBoxes();
    pageBox.checked = boxes.length > 0 && boxes.every((box) => box.checked);
    pageBox.indeterminate = chosen > 0 && !pageBox.checked;
  }
}

document.addEventListener("click", (event) => {
  const box = event.target.closest("input[name=msg_id][form=action-form]");
  if (box) {
    const boxes = rowBoxes();
    // Shift-click ticks (or unticks) every row between this one and the one clicked before.
    if (event.shiftKey && lastClicked && boxes.includes(lastClicked)) {
      const [from, to] = [boxes.indexOf(lastClicked), boxes.indexOf(box)].sort((a, b) => a - b);
      boxes.slice(from, to + 1).forEach((other) => (other.checked = box.checked));
    }
    lastClicked = box;
    if (matchingEverything()) actionForm().querySelector("[data-scope]").value = "selected";
    updateSelection();
    return;
  }
  if (event.target.closest("[data-select-page]")) {
    const checked = event.target.checked;
    rowBoxes().forEach((other) => (other.checked = checked));
    actionForm().querySelector("[data-scope]").value = "selected";
    updateSelection();
    return;
  }
  if (event.target.closest("[data-select-matching]")) {
    const scope = actionForm().querySelector("[data-scope]");
    scope.value = matchingEverything() ? "selected" : "matching";
    if (scope.value === "matching") rowBoxes().forEach((other) => (other.checked = false));
    updateSelection();
  }
});
document.addEventListener("dashboard:updated", updateSelection);
document.addEventListener("DOMContentLoaded", updateSelection);

// The dialog ------------------------------------------------------------------------------------
// htmx puts the confirmation (then the result) in #action-dialog-content; the dialog opens itself.
document.addEventListener("htmx:afterSwap", (event) => {
  const dialog = document.getElementById("action-dialog");
  if (dialog && dialog.contains(event.detail.target) && !dialog.open) dialog.showModal();
});
// An answer with an error status is shown in the dialog all the same: a refused or invalid action
// (400) or one already done (409) as the dialog it is; any other (403, 503, 500) is a whole error
// page, of which only its notice goes in.
document.addEventListener("htmx:beforeSwap", (event) => {
  const dialog = document.getElementById("action-dialog");
  const status = event.detail.xhr.status;
  if (!dialog || !dialog.contains(event.detail.target) || status < 400) return;
  event.detail.shouldSwap = true;
  event.detail.isError = false;
  if (status !== 400 && status !== 409) event.detail.selectOverride = ".notice";
});
document.addEventListener("click", (event) => {
  const closer = event.target.closest("[data-close-dialog]");
  if (!closer) return;
  const dialog = closer.closest("dialog");
  if (dialog) dialog.close();
  if (closer.hasAttribute("data-refresh-after")) {
    rowBoxes().forEach((box) => (box.checked = false));
    const scope = actionForm()?.querySelector("[data-scope]");
    if (scope) scope.value = "selected";
    document.querySelectorAll("[data-live]").forEach((region) => htmx.trigger(region, "refresh"));
    updateSelection();
    // Without a live list (a message's own page), show the message as it is now.
    if (!document.querySelector("[data-live]")) window.location.reload();
  }
});

// The button counts what will be done: the messages in flight only once their box is ticked.
document.addEventListener("change", (event) => {
  if (!event.target.matches("[data-include-in-flight]")) return;
  const form = event.target.form;
  const count = form.querySelector("[data-action-count]");
  if (!count) return;
  count.textContent = event.target.checked ? count.dataset.withInFlight : count.dataset.withoutInFlight;
  form.querySelector("[data-submit-once]").disabled = count.textContent === "0";
});

// A form that acts is sent once: a second click while the first is on its way does nothing (the
// server also refuses the same confirmation twice). htmx forms use hx-disabled-elt instead.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.querySelector("[data-submit-once]") || form.hasAttribute("hx-post")) return;
  if (form.dataset.submitted) {
    event.preventDefault();
    return;
  }
  form.dataset.submitted = "1";
  form.querySelector("[data-submit-once]").classList.add("busy");
});
window.addEventListener("pageshow", () => {
  document.querySelectorAll("form[data-submitted]").forEach((form) => {
    delete form.dataset.submitted;
    form.querySelector("[data-submit-once]")?.classList.remove("busy");
  });
});

// JSON editors ----------------------------------------------------------------------------------
// Checked as typed; a form with broken JSON is not sent (the server checks again anyway).
function checkJson(editor) {
  const status = document.querySelector(`[data-json-status-for="${editor.id}"]`);
  const text = editor.value.trim();
  if (!text && editor.hasAttribute("data-json-optional")) {
    status.textContent = "";
    editor.setCustomValidity("");
    return true;
  }
  try {
    JSON.parse(text);
    status.textContent = "Valid JSON";
    status.className = "json-status small ok";
    editor.setCustomValidity("");
    return true;
  } catch (error) {
    status.textContent = `Not valid JSON: ${error.message}`;
    status.className = "json-status small error";
    editor.setCustomValidity("Not valid JSON");
    return false;
  }
}
// The server's own message about a field, once shown, stands until the field is edited.
function serverErrors(editor) {
  return document.querySelectorAll(`[data-server-error-for="${editor.id}"]`);
}
document.addEventListener("input", (event) => {
  if (!event.target.matches("[data-json-editor]")) return;
  serverErrors(event.target).forEach((error) => error.remove());
  checkJson(event.target);
});
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-json-editor]").forEach((editor) => serverErrors(editor).length || checkJson(editor));
});
