"""Events: the engine never prints. It emits events; observers (the CLI's renderers, JSON lines, logs) consume them.

An observer that fails never breaks a run: its exception is logged and swallowed.
Events may be emitted from several threads at once (the runner runs independent steps side by side): delivery is
serialised, so each observer gets whole events one at a time and lines it prints are never interleaved.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("liferaft.events")


@dataclass(frozen=True)
class Event:
    """Something happened. `kind` is dotted (e.g. "step.started", "objects.progress"); `data` is JSON-safe."""

    kind: str
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"ts": round(self.ts, 3), "kind": self.kind, "message": self.message, **self.data}


# Anything that takes an Event: a function, a bound method, a renderer object with __call__.
Observer = Callable[[Event], None]


class Events:
    """A fan-out of events to observers. Pass one of these (or None) to long operations."""

    def __init__(self, *observers: Observer) -> None:
        self._observers: list[Observer] = list(observers)
        # Re-entrant: an observer may emit (in the same thread) while it is being called.
        self._lock = threading.RLock()

    def subscribe(self, observer: Observer) -> None:
        with self._lock:
            self._observers.append(observer)

    def emit(self, kind: str, message: str = "", **data: Any) -> None:
        """Deliver one event to every observer, under a lock: events from other threads wait until it is out."""
        event = Event(kind, message, data)
        with self._lock:
            for obs in list(self._observers):
                try:
                    obs(event)
                except Exception:  # an observer must never break a run
                    log.exception("observer %r failed on %s", obs, kind)


NULL_EVENTS = Events()


def as_events(events: Events | Callable[[Event], None] | None) -> Events:
    """Accept an Events, a plain callback, or None."""
    if events is None:
        return Events()
    if isinstance(events, Events):
        return events
    return Events(events)
