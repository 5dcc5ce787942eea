"""For job runners: do not start new work while the site is down, let running work finish.

    from upgrader.web.background import accepting_new_work, refuse_when_down

    if accepting_new_work():
        queue.pop().run()

    @refuse_when_down
    def send_newsletter(): ...      # raises NotAcceptingWork instead of running

New work is refused in every state but `ok` and during any active maintenance
window, including the `banner` level (the site stays usable; only new background
work waits). The answer comes from the same cached diagnosis as the pages.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from upgrader.core.diagnosis import Diagnosis, State

P = ParamSpec("P")
R = TypeVar("R")

_guard: weakref.ref[Any] | None = None


class NotAcceptingWork(RuntimeError):
    """Raised instead of starting a job while maintenance or a version mismatch lasts."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        super().__init__(f"not starting new work: {_why(diagnosis)}")
        self.diagnosis = diagnosis


def _why(d: Diagnosis) -> str:
    """What holds new work back: the maintenance an administrator switched on (its level,
    message and expected end), or the state."""
    m = d.maintenance
    if (
        m is not None
        and m.active(d.checked_at)
        and (d.state.serving or d.state is State.MAINTENANCE)
    ):
        end = m.end or m.until
        said = f": {m.message}" if m.message else ""
        until = f", until about {end:%Y-%m-%d %H:%M} UTC" if end else ""
        return f"maintenance is on ({m.mode} level{until}){said}"
    return f"{d.state.value} ({d.summary})"


def register(guard: Any) -> None:
    """The middleware registers itself; a worker without one can call `use(cache)`."""
    global _guard
    _guard = weakref.ref(guard)


class _Holder:
    def __init__(self, cache: Any) -> None:
        self.cache = cache


_holders: list[_Holder] = []  # keeps the holders `use()` registers alive


def use(cache: Any) -> None:
    """For a worker process with no web guard: pass a DiagnosisCache to read from."""
    holder = _Holder(cache)
    _holders[:] = [holder]
    register(holder)


def _current() -> Diagnosis:
    guard = _guard() if _guard is not None else None
    if guard is None:
        raise RuntimeError("no upgrader guard in this process: call upgrader.web.background.use()")
    diagnosis: Diagnosis = guard.cache.get()
    return diagnosis


def accepting_new_work() -> bool:
    d = _current()
    if not d.state.serving:
        return False
    m = d.maintenance
    return m is None or not m.active(d.checked_at)


def refuse_when_down(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not accepting_new_work():
            raise NotAcceptingWork(_current())
        return func(*args, **kwargs)

    return wrapper
