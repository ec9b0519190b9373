"""Ctrl-C during training: finish the step, save a checkpoint, stop with one line.

A SIGINT raised mid-step would leave the weights, optimizer and selection index out of step with
each other, so the first Ctrl-C only asks the loop to stop at the next step boundary; a second one
interrupts at once (KeyboardInterrupt), for a step that takes too long.
"""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """Between :meth:`start` and :meth:`restore` (or in a with-block), the first SIGINT sets :attr:`requested` instead of raising.

    Disabled (Ctrl-C raises at once) outside the main thread, where Python cannot install signal
    handlers, and when ``enabled`` is false: ranks of a distributed run would each stop at their own
    step and wait for one another in the next collective."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def start(self) -> StopRequest:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def restore(self) -> None:
        """Put back the SIGINT handler that was there before :meth:`start`."""
        if self.enabled and self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def __enter__(self) -> StopRequest:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.restore()
