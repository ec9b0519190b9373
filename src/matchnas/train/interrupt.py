"""Ctrl-C or SIGTERM during training: finish the step, save a checkpoint, stop with one line.

A SIGINT raised mid-step would leave the weights, optimizer and selection index out of step with
each other, so the first Ctrl-C only asks the loop to stop at the next step boundary; a second one
interrupts at once (KeyboardInterrupt), for a step that takes too long. SIGTERM, the way batch
schedulers, containers and spot instances stop a job, is taken the same way (a second one raises
:class:`Terminated`). While a checkpoint is being written (:meth:`StopRequest.shield`) every signal
only asks to stop: the write finishes, so an interrupt never costs the checkpoint being written.

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
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the graceful stop of the training loop: unwind (temps of atomic writes are
    removed on the way) and exit 143, as :func:`raise_on_sigterm` arranges."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextmanager
def raise_on_sigterm():
    """Within the block (main thread only), SIGTERM raises :class:`Terminated` instead of killing
    the process where it stands."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        self.signum = signal.SIGINT  # the first signal that asked to stop
        self._first = 0.0
        self._shielded = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if not self.requested:
            self.requested, self.signum, self._first = True, signum, time.monotonic()
        elif self._shielded:
            return  # a checkpoint is being written: it finishes, then the loop stops
        elif time.monotonic() - self._first > self.repeat_grace:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    @property
    def name(self) -> str:
        """How the stop was asked for, for messages: "Ctrl-C" or "SIGTERM"."""
        return "SIGTERM" if self.signum == signal.SIGTERM else "Ctrl-C"

    @contextmanager
    def shield(self):
        """Within the block, repeated signals too only set :attr:`requested` (a checkpoint write
        is not cut short; the caller stops after it)."""
        self._shielded = True
        try:
            yield
        finally:
            self._shielded = False

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
