"""Static int8 ExecuTorch export: PyTorch 2 export (PT2E) quantization with the XNNPACK
quantizer, lowered to XNNPACK, checked and timed in the ExecuTorch runtime (batch 1).

The flow is the one ExecuTorch documents: export the float subnet to an ATen graph, let the
XNNPACK quantizer annotate it (``prepare_pt2e`` inserts observers), run the calibration images
through it, ``convert_pt2e`` (quantize/dequantize pairs with the observed ranges), export again
and lower: XNNPACK's partitioner turns each ``dq -> conv -> q`` pattern into an int8 kernel.
Weights int8 per output channel, activations int8 per tensor (the symmetric config's defaults).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from matchnas.export.executorch_format import executorch_api, set_threads
from matchnas.export.parity import time_calls

QUANT_SETTINGS = {
    "library": "torchao.quantization.pt2e (prepare_pt2e/convert_pt2e) + XNNPACKQuantizer",
    "weights": "int8, per output channel, symmetric",
    "activations": "int8, per tensor, asymmetric",
    "calibration_method": "MinMax observers",
}


def _pt2e():
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    return quantizer, prepare_pt2e, convert_pt2e


def quantize_executorch(net: torch.nn.Module, float_path: Path, path: Path, calibration: np.ndarray, test: np.ndarray,
                        threads: int, runs: int) -> tuple[dict, np.ndarray]:
    """Write ``path`` (an int8 ``.pte``); return its record and its logits on ``test``."""
    from importlib.metadata import version

    et = executorch_api()
    quantizer, prepare_pt2e, convert_pt2e = _pt2e()
    one = torch.from_numpy(test[:1]).contiguous()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        graph = torch.export.export(net, (one,)).module()
        observed = prepare_pt2e(graph, quantizer)
        # The graph is specialised to batch 1 (as the .pte is): calibrate image by image.
        for image in torch.from_numpy(calibration).split(1):
            observed(image.contiguous())
        quantized = convert_pt2e(observed)
        program = torch.export.export(quantized, (one,))
        lowered = et["lower"](program, partitioner=[et["partitioner"]()])
        path.write_bytes(lowered.to_executorch().buffer)
    pool_threads = set_threads(threads)
    method = et["runtime"].get().load_program(path).load_method("forward")
    images = torch.from_numpy(test)
    logits = np.concatenate([method.execute([images[i : i + 1].contiguous()])[0].numpy() for i in range(len(test))])
    latency = time_calls(lambda: method.execute([one]), runs)
    record = {
        "format": "executorch",
        "precision": "int8",
        "quantization": QUANT_SETTINGS,
        "input_shape": [1, *map(int, test.shape[1:])],
        "batch": "fixed at 1: a .pte runs one image per call",
        "backend": "XNNPACK",
        "latency": {**latency, "runtime": f"executorch {version('executorch')} (XNNPACK)", "threads": pool_threads},
    }
    return record, logits
