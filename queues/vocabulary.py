"""The action vocabulary: every action the dashboard can take, as the audit log, the API, the
forms and the pages name it, which table it works on, and whether it is destructive. Read by
services, forms, serializers, views and templates; nothing else spells an action's label."""

from __future__ import annotations

from dataclasses import dataclass

from queues.pgmq import ARCHIVE, LIVE


@dataclass(frozen=True)
class Action:
    name: str  # in the audit log, the API and the forms
    label: str  # in words, on buttons, dialogs and refusals
    table: str | None = None  # LIVE or ARCHIVE for actions on messages; None for the others
    destructive: bool = False  # messages go, or go elsewhere: the button is drawn as dangerous
    # A message in flight is left alone unless asked: acting on it means a second delivery.
    guards_in_flight: bool = False
    asks_more: bool = False  # its dialog asks for more (a time, a destination): its button ends in "…"
    dialog_title: str = ""  # when the dialog says more than the label

    @property
    def button(self) -> str:
        return self.label + ("…" if self.asks_more else "")

    @property
    def title(self) -> str:
        return self.dialog_title or self.label

    @property
    def verb(self) -> str:
        """The label's verb, for sentences ("Retry those too")."""
        return self.label.split()[0]


RETRY, DELAY, ARCHIVE_ACTION, DELETE, MOVE = "retry", "delay", "archive", "delete", "move"
REQUEUE, DELETE_ARCHIVED = "requeue", "delete_archived"
SEND, EDIT_AND_RESEND, PURGE = "send", "edit_and_resend", "purge"
CREATE_QUEUE, DROP_QUEUE = "create_queue", "drop_queue"

ACTIONS: dict[str, Action] = {
    action.name: action
    for action in [
        Action(RETRY, "Retry now", LIVE, guards_in_flight=True),
        Action(DELAY, "Delay", LIVE, asks_more=True),
        Action(ARCHIVE_ACTION, "Archive", LIVE),
        Action(
            MOVE,
            "Move",
            LIVE,
            destructive=True,
            guards_in_flight=True,
            asks_more=True,
            dialog_title="Move to another queue",
        ),
        Action(DELETE, "Delete", LIVE, destructive=True),
        Action(REQUEUE, "Requeue", ARCHIVE, asks_more=True),
        Action(DELETE_ARCHIVED, "Delete from the archive", ARCHIVE, destructive=True),
        Action(SEND, "Send"),
        Action(EDIT_AND_RESEND, "Edit and resend", asks_more=True),
        Action(PURGE, "Purge", destructive=True),
        Action(CREATE_QUEUE, "Create queue"),
        Action(DROP_QUEUE, "Drop", destructive=True),
    ]
}

LIVE_ACTIONS = [name for name, action in ACTIONS.items() if action.table == LIVE]
ARCHIVE_ACTIONS = [name for name, action in ACTIONS.items() if action.table == ARCHIVE]
MESSAGE_ACTIONS = LIVE_ACTIONS + ARCHIVE_ACTIONS
DESTRUCTIVE = frozenset(name for name, action in ACTIONS.items() if action.destructive)
GUARDS_IN_FLIGHT = frozenset(name for name, action in ACTIONS.items() if action.guards_in_flight)


def on_table(table: str) -> list[Action]:
    """The actions on messages of the live table or of the archive, in the order the pages offer them."""
    return [action for action in ACTIONS.values() if action.table == table]
