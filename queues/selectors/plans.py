"""What an action will do, stated before it is done: the counts a confirmation shows (pages and API)."""

from __future__ import annotations

import dataclasses

from django.db.models.functions import Now

from queues import vocabulary
from queues.filters import MessageFilter
from queues.lineage import dead_letter_pair
from queues.pgmq import LIVE, Queue, TableSharing, table_sharing
from queues.selectors.copies import copies_of

COUNT_BUDGET_MS = 10_000


@dataclasses.dataclass(frozen=True)
class ActionPlan:
    """What an action will do, stated before it is done."""

    action: str
    label: str
    verb: str
    source: str
    count: int | None  # exact; None when counting took too long (a filter on a huge table)
    still_there: int | None  # of the selected messages
    already_gone: int  # selected, but a consumer took them meanwhile
    in_flight: int | None  # a retry makes these visible again: a second delivery
    filter_words: str | None
    destinations: list[str]
    destructive: bool
    requeued_before: dict[int, dict] = dataclasses.field(default_factory=dict)  # requeue: msg_id -> its copy
    queue_name: str = ""  # the source
    # For a move or requeue, every name whose tables another name shares: moving from or to one is refused.
    table_sharing: dict[str, TableSharing] = dataclasses.field(default_factory=dict)
    # Chosen by read_ct (poison): the messages are nearly all in flight, and the dialog says so first.
    chosen_by_read_ct: bool = False
    proposed_destination: str | None = None  # the queue's dead-letter pair (queues/lineage.py)

    @property
    def short_label(self) -> str:
        return vocabulary.ACTIONS[self.action].label

    @property
    def refused_for_shared_tables(self) -> TableSharing | None:
        """The source queue's sharing when this is a move or requeue from it (refused)."""
        return self.table_sharing.get(self.queue_name) if self.action in (vocabulary.MOVE, vocabulary.REQUEUE) else None

    @property
    def destination_choices(self) -> list[tuple[str, TableSharing | None]]:
        return [(name, self.table_sharing.get(name)) for name in self.destinations]

    @property
    def count_unless_in_flight(self) -> int | None:
        """How many are done if the ones in flight are left alone (the default)."""
        if self.count is None or not self.in_flight:
            return self.count
        return max(self.count - self.in_flight, 0)


def plan_for_form(queue: Queue, form, *, redacted: bool) -> ActionPlan:
    """The plan of a valid forms.MessageActionForm (a page's or the API's)."""
    data = form.cleaned_data
    if data["scope"] == "selected":
        return plan_action(queue, data["action"], data["source"], msg_ids=data["msg_id"])
    return plan_action(queue, data["action"], data["source"], message_filter=form.message_filter(redacted=redacted))


def plan_action(
    queue: Queue,
    action: str,
    source: str,
    *,
    msg_ids: list[int] | None = None,
    message_filter: MessageFilter | None = None,
) -> ActionPlan:
    """What `action` would do to the chosen messages (`msg_ids`) or to every one `message_filter` matches."""
    model = queue.live_messages if source == LIVE else queue.archived_messages
    in_flight, requeued_before = None, {}
    if msg_ids is not None:
        ids = msg_ids
        still_there = model.objects.filter(msg_id__in=ids).count()
        count, gone, words = still_there, len(ids) - still_there, None
        if source == LIVE and action in vocabulary.GUARDS_IN_FLIGHT:
            in_flight = model.objects.filter(msg_id__in=ids, vt__gt=Now(), read_ct__gt=0).count()
        if action == vocabulary.REQUEUE:
            requeued_before = copies_of(queue, ids, action=vocabulary.REQUEUE)
    else:
        count = message_filter.count(queue, source, budget_ms=COUNT_BUDGET_MS)
        still_there, gone, words = None, 0, message_filter.in_words()
        if source == LIVE and action in vocabulary.GUARDS_IN_FLIGHT and message_filter.state in (None, "in_flight"):
            in_flight = dataclasses.replace(message_filter, state="in_flight").count(
                queue, source, budget_ms=COUNT_BUDGET_MS
            )
    destinations = list(Queue.objects.values_list("queue_name", flat=True))
    if action == vocabulary.MOVE:
        destinations = [name for name in destinations if name != queue.queue_name]
    return ActionPlan(
        action=action,
        label=vocabulary.ACTIONS[action].title,
        verb=vocabulary.ACTIONS[action].verb,
        source=source,
        count=count,
        still_there=still_there,
        already_gone=gone,
        in_flight=in_flight,
        filter_words=words,
        destinations=destinations,
        destructive=action in vocabulary.DESTRUCTIVE,
        requeued_before=requeued_before,
        queue_name=queue.queue_name,
        table_sharing=table_sharing() if action in (vocabulary.MOVE, vocabulary.REQUEUE) else {},
        chosen_by_read_ct=message_filter is not None and message_filter.read_ct_min is not None,
        proposed_destination=dead_letter_pair(queue.queue_name, destinations),
    )
