"""The server-wide queue of training slots: how many jobs train at once, first come first served.

A `TrainingJob` given the server's `TrainingSlots` waits for a free slot before it trains and
reports its place in the queue meanwhile (see `TrainingJob`'s `slots` argument).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from models.validation import check_whole_number


def default_training_slots() -> int:
    """Concurrent training jobs allowed by default: one per two CPU cores (at least one).

    Example:
    >>> default_training_slots()  # on a 2-core machine
    1
    """
    return max(1, (os.cpu_count() or 2) // 2)


class TrainingSlots:
    """A process-wide, first-come-first-served limit on concurrent training jobs.

    On a shared server (a workshop: 30 sessions, 2 cores) jobs that all trained at once would
    thrash the CPU and starve the page; queued jobs wait their turn and show their position.

    Args:
        limit: Jobs allowed to train at once; `default_training_slots()` when None.

    Example:
    >>> slots = TrainingSlots(limit=1)
    >>> job = TrainingJob(model, x, y, slots=slots)
    """

    def __init__(self, limit: int | None = None) -> None:
        limit = default_training_slots() if limit is None else limit
        self.limit = check_whole_number("limit", limit, 1)
        self._condition = threading.Condition()
        self._running = 0
        self._queue: list[object] = []

    def _ahead(self, ticket: object) -> int:
        return self._queue.index(ticket)

    def acquire(
        self,
        ticket: object,
        cancelled: threading.Event,
        on_wait: Callable[[int], None] | None = None,
    ) -> bool:
        """Waits for a slot; returns False when `cancelled` is set first.

        Args:
            ticket: Any object identifying the waiting job.
            cancelled: Stops the wait when set.
            on_wait: Called with the number of jobs ahead (0 = next) while waiting.

        Returns:
            True when the slot is taken (call `release()` later), False when cancelled.
        """
        with self._condition:
            self._queue.append(ticket)
            try:
                while True:
                    ahead = self._ahead(ticket)
                    if ahead < self.limit - self._running:
                        self._queue.remove(ticket)
                        self._running += 1
                        return True
                    if cancelled.is_set():
                        self._queue.remove(ticket)
                        self._condition.notify_all()
                        return False
                    if on_wait is not None:
                        on_wait(ahead - (self.limit - self._running) + 1)
                    self._condition.wait(timeout=0.25)
            except BaseException:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                raise

    def release(self) -> None:
        """Frees a slot taken with `acquire`."""
        with self._condition:
            self._running = max(0, self._running - 1)
            self._condition.notify_all()

    @property
    def running(self) -> int:
        """Jobs training now."""
        with self._condition:
            return self._running

    @property
    def waiting(self) -> int:
        """Jobs waiting for a slot."""
        with self._condition:
            return len(self._queue)
