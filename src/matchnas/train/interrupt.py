"""Ctrl-C during training: finish the step, save a checkpoint, stop with one line.

A SIGINT raised mid-step would leave the weights, optimizer and selection index out of step with
each other, so the first Ctrl-C only asks the loop to stop at the next step boundary; a second one
interrupts at once (KeyboardInterrupt), for a step that takes too long.

Under torchrun the terminal's Ctrl-C reaches every rank and the launcher, which forwards it to the
ranks again and kills them 30 s later; a scheduler stopping the job sends SIGTERM the same way. So
a distributed run also takes SIGTERM as a stop request, ignores a repeat that comes within
``repeat_grace`` seconds (the launcher's copy of the same request), and the ranks agree on the step
to stop at through :func:`matchnas.train.distributed.any_rank`.
"""

from __future__ import annotations

import signal
import threading
import time


class StopRequest:
    """Between :meth:`start` and :meth:`restore` (or in a with-block), the first SIGINT (and, with
    ``terminate``, SIGTERM) sets :attr:`requested` instead of raising.

    Disabled (Ctrl-C raises at once) outside the main thread, where Python cannot install signal
    handlers."""

    def __init__(self, terminate: bool = False, repeat_grace: float = 0.0) -> None:
        self.enabled = threading.current_thread() is threading.main_thread()
        self.signals = (signal.SIGINT, signal.SIGTERM) if terminate else (signal.SIGINT,)
        self.repeat_grace = repeat_grace
        self.requested = False
        self._first = 0.0
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if not self.requested:
            self.requested, self._first = True, time.monotonic()
        elif time.monotonic() - self._first > self.repeat_grace:
            raise KeyboardInterrupt

    def start(self) -> StopRequest:
        if self.enabled:
            self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`start`."""
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous = {}

    def __enter__(self) -> StopRequest:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.restore()
