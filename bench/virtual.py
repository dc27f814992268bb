"""An asyncio event loop on a virtual clock: whenever every task waits, time jumps to the next timer.

``asyncio.sleep``, ``call_later`` and ``wait_for`` keep working unchanged; nothing sleeps in wall time, so a
simulated hour of many instances takes as long as their callbacks take to run. Built on public hooks only:
``SelectorEventLoop`` takes its selector as an argument, and ``time`` is a method of the loop.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class Deadlock(RuntimeError):
    """Every task waits and no timer is due: on a virtual clock nothing could ever wake them."""


class _JumpingSelector(selectors.SelectSelector):
    """The loop's selector: a wait for ``timeout`` seconds advances the clock by that much instead of sleeping
    (the loop passes the time to its next timer, or 0 while callbacks are ready)."""

    def __init__(self, loop: VirtualLoop) -> None:
        super().__init__()
        self.loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Deadlock("every task waits and no timer is due")
        if timeout > 0:
            self.loop.now += timeout
        return super().select(0)  # the loop's own wake-up pipe, never waited on


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` starts at 0 and moves only when every task waits."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run(main: Any) -> Any:
    """Run the coroutine ``main`` to completion on a fresh ``VirtualLoop``."""
    with asyncio.Runner(loop_factory=VirtualLoop) as runner:
        return runner.run(main)
