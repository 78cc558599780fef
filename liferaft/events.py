"""Events: the engine never prints. It emits events; observers (the CLI's renderers, JSON lines, logs) consume them.

An observer that fails never breaks a run: its exception is logged and swallowed.
"""

from __future__ import annotations

import logging
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

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def emit(self, kind: str, message: str = "", **data: Any) -> None:
        event = Event(kind, message, data)
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
