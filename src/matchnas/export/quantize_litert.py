"""Static int8 LiteRT export: the float32 ``.tflite`` quantized with ai-edge-quantizer, checked
and timed in the LiteRT interpreter (batch 1).

The quantizer works on the file that ships, as onnxruntime's does for ONNX: it runs the
calibration images through the float32 ``.tflite`` (MinMax ranges of every tensor), then writes
every op LiteRT has an int8 kernel for with int8 weights (per output channel, symmetric) and int8
activations (per tensor, asymmetric: LiteRT's int8 kernels take a zero point). The input and the
output are int8 too, their scale and zero point in the file (TFLite Micro's convention);
:func:`matchnas.litert_runtime.run_images` converts at the edges. An op left in float32 (no int8
kernel) is listed in the record's ``float_ops``; empty means the graph is int8 throughout.

Latency is LiteRT's default interpreter, XNNPACK delegate included, as an app gets it. Measured at
32 px, 1 thread: a random Lite0 subnet 0.12 ms int8 against 0.24 ms float32, but a MobileNetV3
subnet 6.6 ms against 0.93 ms: the delegate splits its int8 graph into 22 partitions (1 for
float32, 1 for int8 Lite0), and the same int8 file without the delegate runs in 2.0 ms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from matchnas.export.litert_format import BATCH, litert_api, quiet
from matchnas.export.parity import time_calls
from matchnas.litert_runtime import open_interpreter, run_images, runtime_name

QUANT_SETTINGS = {
    "library": "ai-edge-quantizer (recipe static_wi8_ai8)",
    "weights": "int8, per output channel, symmetric",
    "activations": "int8, per tensor, asymmetric",
    "input_output": "int8, scale and zero point in the file",
    "calibration_method": "MinMax over all calibration images",
}


def quantize_litert(net, float_path: Path, path: Path, calibration: np.ndarray, test: np.ndarray,
                    threads: int, runs: int) -> tuple[dict, np.ndarray]:
    """Quantize ``float_path`` (``net`` exported) into ``path``; return its record (format,
    latency, float ops) and its logits on ``test`` (model-ready images, ``N x C x R x R``)."""
    from importlib.metadata import version

    del net  # the quantizer reads the float32 file, not the PyTorch subnet
    aeq = litert_api()["quantizer"]
    float_model = open_interpreter(float_path, threads)
    (signature, names), = float_model.get_signature_list().items()
    (name,) = names["inputs"]
    samples = [{name: image[None]} for image in calibration.astype(np.float32)]
    with quiet():
        quantizer = aeq.Quantizer(str(float_path), aeq.recipe.static_wi8_ai8())
        ranges = minmax_ranges(float_path, quantizer.get_quantization_recipe(), {signature: samples}, threads)
        quantizer.quantize(ranges, enable_progress_report=False).export_model(str(path), overwrite=True)
    model = open_interpreter(path, threads)
    logits = run_images(model, test)
    one = test[:1]
    latency = time_calls(lambda: run_images(model, one), runs)
    record = {
        "format": "litert",
        "precision": "int8",
        "quantization": {**QUANT_SETTINGS, "library_version": version("ai-edge-quantizer")},
        "input_shape": [1, *map(int, test.shape[1:])],
        "batch": BATCH,
        "input_dtype": np.dtype(model.get_input_details()[0]["dtype"]).name,
        "float_ops": float_ops(model),
        "backend": "XNNPACK",
        "latency": {**latency, "runtime": runtime_name(), "threads": threads},
    }
    return record, logits


def minmax_ranges(float_path: Path, recipe, samples: dict, threads: int) -> dict:
    """Each tensor's min and max over every calibration image (onnxruntime's MinMax).
    ``Quantizer.calibrate`` keeps an exponential moving average of each sample's min and max
    instead, and a ``.tflite`` of batch 1 makes every image a sample: the input range of a
    Fashion-MNIST subnet then stopped at 0.78 of the images' 0.99 (bright pixels clipped) and int8
    top-1 dropped up to 1.8 points. ``recipe`` is the quantizer's own, so the calibrated tensors
    are the ones it quantizes."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    calib = calibrator.Calibrator(float_path.read_bytes(), num_threads=threads,
                                  qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate(samples, manager)
    return calib.get_model_qsvs()


def float_ops(model) -> list[str]:
    """The op types of ``model`` that still compute in float32 (their output is float32), except
    the DEQUANTIZE that ends an int8 region; sorted, without repeats."""
    tensors = {t["index"]: np.dtype(t["dtype"]) for t in model.get_tensor_details()}
    found = set()
    for op in model._get_ops_details():  # noqa: SLF001 (LiteRT's only per-op listing)
        outputs = [tensors[i] for i in op["outputs"] if i in tensors]
        if op["op_name"] not in ("DEQUANTIZE", "DELEGATE") and any(d == np.float32 for d in outputs):
            found.add(op["op_name"])
    return sorted(found)
