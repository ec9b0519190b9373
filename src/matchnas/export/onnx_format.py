"""ONNX export (opset 17, dynamic batch axis, the bundle's metadata embedded), checked and timed
in onnxruntime."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from matchnas.export.parity import max_diff, parity_numbers, time_calls

ONNX_OPSET = 17


def export_onnx(net, x: torch.Tensor, path: Path, meta: dict, threads: int, runs: int) -> dict:
    import onnx
    import onnxruntime as ort

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (x[:1],), str(path), input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=ONNX_OPSET, dynamo=False,
        )
    model = onnx.load(str(path))
    for key, value in meta.items():
        model.metadata_props.add(key=f"matchnas.{key}", value=json.dumps(value))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images = x.numpy()
    with torch.no_grad():
        reference = net(x).numpy()
    # Batch 1 on a few images, then batches of up to 64: proves the batch axis is dynamic.
    single = np.concatenate([session.run(None, {"images": images[i : i + 1]})[0] for i in range(min(16, len(x)))])
    batched = np.concatenate([session.run(None, {"images": images[i : i + 64]})[0] for i in range(0, len(x), 64)])
    parity = parity_numbers(reference, batched)
    parity["max_abs_logit_diff"] = max(parity["max_abs_logit_diff"], max_diff(reference[: len(single)], single))
    parity["batch_sizes"] = sorted({1} | {len(images[i : i + 64]) for i in range(0, len(x), 64)})
    one = images[:1]
    latency = time_calls(lambda: session.run(None, {"images": one}), runs)
    return {
        "format": "onnx",
        "input_shape": ["batch", int(x.shape[1]), int(x.shape[2]), int(x.shape[3])],
        "batch": "any",
        "output_shape": ["batch", int(reference.shape[1])],
        "opset": ONNX_OPSET,
        "parity": parity,
        "latency": {**latency, "runtime": f"onnxruntime {ort.__version__}", "provider": "CPUExecutionProvider",
                    "intra_op_num_threads": threads, "inter_op_num_threads": 1},
    }
