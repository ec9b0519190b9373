"""Checking an exported file against the PyTorch subnet, and timing it in its runtime."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from matchnas.errors import MatchnasError


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def parity_numbers(reference: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
    return {
        "images": int(reference.shape[0]),
        "max_abs_logit_diff": max_diff(reference, outputs),
        "top1_agreement": float((reference.argmax(1) == outputs.argmax(1)).mean()) if reference.shape == outputs.shape else 0.0,
    }


def check_parity(file_name: str, fmt: str, parity: dict, tolerance: float) -> None:
    """Record ``tolerance`` in ``parity`` and refuse the export when the difference is above it."""
    parity["tolerance"] = tolerance
    diff = parity["max_abs_logit_diff"]
    if not diff <= tolerance:
        raise MatchnasError(
            f"{file_name}: {fmt} output differs from PyTorch by {diff:.3g} (max |logit|, "
            f"tolerance {tolerance:.3g}; top-1 agreement {100 * parity['top1_agreement']:.1f}% on "
            f"{parity['images']} images): nothing written"
        )


def time_calls(run: Callable[[], Any], runs: int) -> dict[str, Any]:
    """Batch-1 latency in ms: the median of ``runs`` timed calls after ``runs // 5`` warm-up calls."""
    warmup = max(1, runs // 5)
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        run()
        times.append(1e3 * (time.perf_counter() - began))
    return {"ms_median": statistics.median(times), "ms_min": min(times), "runs": runs, "warmup": warmup, "batch": 1}
