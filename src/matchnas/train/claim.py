"""A run folder is one training job's while it trains.

:func:`claim_run` checks the folder can be written, takes its lock (:mod:`matchnas.lock`) and,
under the lock, checks again that a new run does not overwrite a run that another job finished
or checkpointed meanwhile. Under torchrun rank 0 alone writes, so it alone claims the folder, and
the ranks agree on the outcome (one all-reduce): a refused claim stops every rank with one line
instead of leaving the others waiting in a collective.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from matchnas.checkpoint import has_checkpoint
from matchnas.errors import MatchnasError
from matchnas.io import check_writable
from matchnas.lock import FolderLock, run_lock
from matchnas.train.distributed import Placement, any_rank


@contextmanager
def claim_run(run_dir: Path, placement: Placement, resume: bool) -> Iterator[None]:
    """Hold ``run_dir`` for training (or resuming) within the block; refuse a folder that cannot
    be written, that another process holds, or (a new run) that holds a run already."""
    lock: FolderLock | None = None
    refusal: MatchnasError | None = None
    if placement.is_main:
        try:
            check_writable(run_dir, "run directory", folder=True)
            lock = run_lock(run_dir, "train --resume" if resume else "train", create=True).acquire()
            if not resume and has_checkpoint(run_dir):
                raise MatchnasError(f"{run_dir} already holds a run: resume it with --resume {run_dir}")
        except MatchnasError as err:
            refusal = err
            if lock is not None:
                lock.release()
                lock = None
    if any_rank(refusal is not None, placement):
        raise refusal or MatchnasError(f"{run_dir}: refused by rank 0 (its error line says why)")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
