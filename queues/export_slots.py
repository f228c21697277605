"""How many exports run at once: per signed-in user and in all in this worker process.

An export holds a worker thread for as long as its client takes to read it. Twenty of them at
once took every thread, and everyone's pages waited. So an export takes a slot first
(settings.EXPORTS_PER_USER, EXPORTS_PER_WORKER; the latter kept below the worker's threads) and
gives it back when its response is closed, read to the end or not; over the cap the view answers
429 with Retry-After. Counted per process: gunicorn's workers each have their own slots.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator

from django.conf import settings

RETRY_AFTER_SECONDS = 5

_lock = threading.Lock()
_running: Counter = Counter()  # user id -> exports running


class ExportsBusy(Exception):
    """No slot: the reason, in words."""


class ExportSlot:
    """A slot taken; released once, by close() (Django closes a response's content when it is done)."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self._released = False

    def release(self) -> None:
        with _lock:
            if not self._released:
                self._released = True
                _running[self.user_id] -= 1
                if _running[self.user_id] <= 0:
                    del _running[self.user_id]


def take_slot(user_id: int) -> ExportSlot:
    with _lock:
        if _running[user_id] >= settings.EXPORTS_PER_USER:
            raise ExportsBusy(f"You have {_running[user_id]} exports running already")
        if sum(_running.values()) >= settings.EXPORTS_PER_WORKER:
            raise ExportsBusy("Other exports are running: this dashboard process takes no more just now")
        _running[user_id] += 1
    return ExportSlot(user_id)


class HoldingSlot:
    """A response's content that gives its slot back when closed, even if never read."""

    def __init__(self, slot: ExportSlot, content: Iterable[str]) -> None:
        self.slot = slot
        self.content = content

    def __iter__(self) -> Iterator[str]:
        return iter(self.content)

    def close(self) -> None:
        try:
            close = getattr(self.content, "close", None)
            if close is not None:
                close()
        finally:
            self.slot.release()
