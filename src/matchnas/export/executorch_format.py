"""ExecuTorch export (``.pte`` lowered to XNNPACK, batch 1), checked and timed in the ExecuTorch
runtime; an optional dependency (``.[mobile]``)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from matchnas.errors import MatchnasError
from matchnas.export.parity import parity_numbers, time_calls

INSTALL_HINT = "pip install 'matchnas[mobile]'"
# Every module the ExecuTorch path imports (a test hides them to check the install hint).
EXECUTORCH_MODULES = (
    "executorch.exir",
    "executorch.backends.xnnpack.partition",
    "executorch.runtime",
)


def executorch_api() -> dict[str, Callable]:
    """The ExecuTorch entry points, or a one-line error saying what to install."""
    # torchao (an ExecuTorch dependency) logs warnings about CUDA kernels a CPU build cannot load.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    try:
        from executorch.backends.xnnpack.partition import xnnpack_partitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.runtime import Runtime
    except ImportError:
        raise MatchnasError(f"format executorch needs ExecuTorch, which is not installed: {INSTALL_HINT}") from None
    partitioner = xnnpack_partitioner.XnnpackPartitioner
    return {"partitioner": partitioner, "lower": to_edge_transform_and_lower, "runtime": Runtime}


def set_threads(threads: int) -> int | None:
    """Size ExecuTorch's thread pool (XNNPACK runs on it; without this hook it keeps its default
    size); returns the size it has, None where this build lacks the hook."""
    try:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)
        return portable_lib._threadpool_get_thread_count()
    except (ImportError, AttributeError):
        return None


def export_executorch(net, x: torch.Tensor, path: Path, meta: dict, threads: int, runs: int) -> dict:
    et = executorch_api()
    from importlib.metadata import version

    one = x[:1].contiguous()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(net, (one,))
        lowered = et["lower"](program, partitioner=[et["partitioner"]()])
        path.write_bytes(lowered.to_executorch().buffer)
    pool_threads = set_threads(threads)
    method = et["runtime"].get().load_program(path).load_method("forward")
    with torch.no_grad():
        reference = net(x).numpy()
    outputs = np.concatenate([method.execute([x[i : i + 1].contiguous()])[0].numpy() for i in range(len(x))])
    parity = parity_numbers(reference, outputs)
    parity["batch_sizes"] = [1]
    latency = time_calls(lambda: method.execute([one]), runs)
    return {
        "format": "executorch",
        "input_shape": [1, int(x.shape[1]), int(x.shape[2]), int(x.shape[3])],
        "batch": "fixed at 1: a .pte runs one image per call",
        "output_shape": [1, int(reference.shape[1])],
        "backend": "XNNPACK",
        "parity": parity,
        "latency": {**latency, "runtime": f"executorch {version('executorch')} (XNNPACK)", "threads": pool_threads},
    }
