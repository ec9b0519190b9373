"""``matchnas export``: each selected subnet as a standalone model file, verified in its own runtime.

For every subnet (the picks of a ``selections.json``, or one ``--subnet`` config) the export
1. extracts the static subnet and re-calibrates its BN exactly as :func:`matchnas.train.loop.
   evaluate_config` does (same images, same seed), so the exported model *is* the model whose test
   top-1 is reported; the supernet is never exported;
2. writes one file per format: ONNX (opset 17, any batch size; the bundle's metadata is embedded
   in the file too) or ExecuTorch ``.pte`` lowered to XNNPACK (batch size fixed at 1);
3. runs the file in its own runtime (onnxruntime; the ExecuTorch runtime) on real held-out images
   and compares its logits with the PyTorch subnet's: max absolute difference and top-1
   agreement. Above the tolerance the export fails, naming the model and the numbers;
4. times the file in that runtime (batch 1, median after warm-up, a fixed thread count).

The bundle is built in a hidden folder next to ``out_dir`` and renamed into place at the end, so
a failed export leaves nothing behind and ``force`` replaces an old bundle only once the new one is
complete.

Tolerances (max |logit difference|, float32): 1e-3 for both formats, overridable. Measured on
this machine (onnxruntime 1.31, ExecuTorch 1.5.1): ONNX 1.1e-5 (224 px max subnet) and 2.8e-5
(160 px min subnet) on pre-trained Lite0 with 1000 classes; up to 3.1e-4 over 12 configs of a
2-step digits run, where float32 PyTorch itself is up to 1.8e-4 away from float64 on the same
subnet (the runtimes fold BN into the convolutions and sum in another order). XNNPACK: 1.2e-5 /
5.5e-5 on Lite0, 5.6e-5 / 1.7e-4 on the digits run. 1e-4 would fail correct exports, while real
faults are far above 1e-3: on Lite0 (160 px min subnet) BN eps 1e-5 instead of 1e-3 moves logits
by 2.4, BN left in training mode by 24, even a 127.5-for-128 input scale by 1e-2.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matchnas import cost
from matchnas.data import TFLITE_MEAN, TFLITE_STD, to_model_input
from matchnas.errors import MatchnasError
from matchnas.io import atomic_write_json, check_writable, read_json, remove_leftovers, work_dir
from matchnas.latency import machine_description
from matchnas.space import SearchSpace, SubnetConfig
from matchnas.train.evaluate import accuracy, calibrated_subnet

MANIFEST_VERSION = 1
FORMATS = ("onnx", "executorch")
SUFFIX = {"onnx": ".onnx", "executorch": ".pte"}
TOLERANCE = {"onnx": 1e-3, "executorch": 1e-3}
ONNX_OPSET = 17
INSTALL_HINT = "pip install 'matchnas[mobile]'"
# Every module the ExecuTorch path imports (a test hides them to check the install hint).
EXECUTORCH_MODULES = (
    "executorch.exir",
    "executorch.backends.xnnpack.partition",
    "executorch.runtime",
)


@dataclass(frozen=True)
class Target:
    """One model of the bundle: a config and the budget it answers (None for ``--subnet``)."""

    config: SubnetConfig
    budget: float | None
    label: str  # file-name prefix, e.g. "flops-4.00M"


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    formats: str | Sequence[str] = ("onnx",),
    selections: str | Path | None = None,
    subnet: str | Path | None = None,
    force: bool = False,
    tolerance: float | None = None,
    parity_images: int = 256,
    threads: int = 1,
    latency_runs: int = 50,
) -> str:
    """Export the selected subnets of a trained run as a bundle; returns a summary table.

    Args:
        run_dir: a trained run (``matchnas train --out``).
        out_dir: the bundle folder to create: model files plus ``manifest.json``.
        formats: ``"onnx"``, ``"executorch"`` or both (a list or ``"onnx,executorch"``).
        selections: a ``selections.json`` from ``matchnas search``; default: the run's own, when
            neither this nor ``subnet`` is given.
        subnet: ``"max"``, ``"min"`` or a config JSON file: export this one model (budget null).
        force: replace ``out_dir`` if it holds an earlier bundle.
        tolerance: max |logit difference| allowed against PyTorch; None: :data:`TOLERANCE`.
        parity_images: held-out images compared (at the subnet's resolution).
        threads: intra-op threads of the runtimes for the parity run and the latency.
        latency_runs: timed batch-1 runs (after ``latency_runs // 5`` warm-up runs).

    Raises:
        MatchnasError: bad input (nothing is written) or an export above tolerance.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.is_symlink():  # replace the bundle the link points to, and keep the link
        out_dir = out_dir.resolve()
    formats = parse_formats(formats)
    if tolerance is not None and not tolerance >= 0:
        raise MatchnasError(f"tolerance must be >= 0, got {tolerance}")
    if threads < 1 or latency_runs < 1 or parity_images < 1:
        raise MatchnasError("threads, latency runs and parity images must be at least 1")
    _check_out_dir(out_dir, run_dir, force)
    check_writable(out_dir, "--out")
    if selections is not None and subnet is not None:
        raise MatchnasError("give --selections or --subnet, not both")
    if selections is None and subnet is None:
        selections = run_dir / "selections.json"
        if not selections.is_file():
            raise MatchnasError(f"{run_dir} has no selections.json: run `matchnas search` or give --selections/--subnet")
    if selections is not None:
        selections_body = read_json(selections, "a selections file from `matchnas search`")
    if subnet is not None and str(subnet) not in ("max", "min") and not Path(subnet).is_file():
        raise MatchnasError(f"--subnet: no such file {subnet}")

    # The training stack loads only once the arguments are sane.
    from matchnas.train.loop import load_run

    experiment, supernet, data, _ = load_run(run_dir)
    supernet.eval()
    space = supernet.space
    classes = list(data.source.train.classes)
    if subnet is not None:
        targets, skipped, source = _subnet_target(space, subnet), [], {"subnet": str(subnet)}
    else:
        targets, skipped, source = _selection_targets(Path(selections), selections_body, space, classes)

    # Test top-1 on the held-out split as evaluate_config measures it; parity on the same images.
    held_out, split = (data.source.test, "test") if data.source.test is not None else (data.sets.val, "val")
    if held_out is None or not len(held_out):
        held_out, split = None, None
    check_set, check_split = (held_out, split) if held_out is not None else (data.sets.labeled, "labeled")
    pool = torch.cat([data.sets.labeled.images, data.sets.unlabeled.images])
    t = experiment.train
    preprocess = {
        "color": "grey" if data.sets.labeled.images.shape[1] == 1 else "rgb",
        "fit_size": experiment.data.image_size,
        "channels": supernet.in_chans,
        "mean": TFLITE_MEAN,
        "std": TFLITE_STD,
        "layout": "NCHW",
        "steps": "to grey or RGB; short side to fit_size and centre crop (bilinear, antialiased); "
        "bilinear to resolution (antialiased); (x - mean) / std on 0..255; grey repeated to channels",
    }
    k, c = supernet.num_classes, supernet.in_chans

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir.parent, [out_dir.name])  # of exports killed before they finished
    work = work_dir(out_dir)
    try:
        nets: dict[SubnetConfig, tuple[torch.nn.Module, float | None]] = {}
        done: dict[tuple[SubnetConfig, str], dict] = {}
        models = []
        for target in targets:
            config = target.config
            if config not in nets:
                net = calibrated_subnet(supernet, config, pool, t.recalibration_images, t.seed, data.flip)
                # Exporters want the default memory format (XNNPACK's channels-last pass refuses
                # weights that already are channels-last).
                net = net.to(memory_format=torch.contiguous_format).eval()
                top1 = accuracy(net, held_out, config.resolution) if held_out is not None else None
                nets[config] = (net, top1)
            net, top1 = nets[config]
            entry = _entry(target, top1, space, k, c, classes, {**preprocess, "resolution": config.resolution})
            name = entry["name"]
            x = to_model_input(check_set.images[:parity_images], size=config.resolution, channels=c)
            for fmt in formats:
                path = work / f"{name}{SUFFIX[fmt]}"
                if (config, fmt) in done:  # the same config answers two budgets: same model, copied
                    shutil.copyfile(work / done[config, fmt]["file"], path)
                    record = dict(done[config, fmt])
                else:
                    meta = {"classes": classes, "preprocess": entry["preprocess"], "config": entry["config"]}
                    exporter = _export_onnx if fmt == "onnx" else _export_executorch
                    began = time.perf_counter()
                    record = exporter(net, x, path, meta, threads, latency_runs)
                    record["export_seconds"] = round(time.perf_counter() - began, 3)
                    _check_parity(name, fmt, record["parity"], TOLERANCE[fmt] if tolerance is None else tolerance)
                    done[config, fmt] = record
                record.update(file=path.name, sha256=sha256(path), bytes=path.stat().st_size)
                entry["files"][fmt] = record
            models.append(entry)

        header = {**source, "skipped": skipped, "test_split": split,
                  "parity_images": {"split": check_split, "count": min(parity_images, len(check_set))}}
        manifest = _manifest(run_dir, space, k, header, models)
        atomic_write_json(work / "manifest.json", manifest)
        _move_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return _summary(run_dir, out_dir, space, manifest, formats)


def _entry(target: Target, top1: float | None, space: SearchSpace, k: int, c: int, classes: list[str],
           preprocess: dict) -> dict[str, Any]:
    """A model's manifest entry, before its files: config, budget, costs, top-1, input."""
    config = target.config
    return {
        "name": f"{target.label}-{config.id}",
        "budget": target.budget,
        "budget_label": target.label if target.budget is not None else None,
        "config_id": config.id,
        "config": config.to_dict(),
        "flops": cost.flops(space, config, k, c),  # 2 per multiply-add, one image
        "params": cost.params(space, config, k, c),
        "peak_memory_bytes": cost.peak_memory(space, config, k, c, batch_size=1),
        "test_top1": top1,
        "resolution": config.resolution,
        "normalisation": {"mean": TFLITE_MEAN, "std": TFLITE_STD, "scale": "0..255"},
        "preprocess": preprocess,
        "classes": classes,
        "files": {},
    }


def _manifest(run_dir: Path, space: SearchSpace, k: int, header: dict, models: list[dict]) -> dict[str, Any]:
    from matchnas import __version__

    return {
        "format_version": MANIFEST_VERSION,
        "matchnas_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir.resolve()),
        "space": space.name,
        "space_digest": space.digest,
        "num_classes": k,
        **header,
        "machine": machine_description(),
        "models": models,
    }


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"onnx,executorch"`` or a list -> a tuple of known formats; ExecuTorch must be importable."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    names = tuple(dict.fromkeys(f.strip().lower() for f in items if f.strip()))
    if not names:
        raise MatchnasError(f"no export format given: choose from {', '.join(FORMATS)}")
    for name in names:
        if name not in FORMATS:
            raise MatchnasError(f"unknown export format '{name}': choose from {', '.join(FORMATS)}")
    if "executorch" in names:
        _executorch()
    return names


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- where the configs come from -----------------------------------------------------------------
def _subnet_target(space: SearchSpace, subnet: str | Path) -> list[Target]:
    if str(subnet) in ("max", "min"):
        return [Target(space.max() if str(subnet) == "max" else space.min(), None, str(subnet))]
    return [Target(space.config_from_file(subnet, "--subnet"), None, "subnet")]


def _selection_targets(path: Path, body: Any, space: SearchSpace, classes: list[str]) -> tuple[list[Target], list[dict], dict]:
    """The picks of a ``selections.json`` (see :func:`matchnas.search.run._write_selections`)."""
    try:
        metric, picks, digest = body["metric"], body["picks"], body["space_digest"]
        if not isinstance(picks, list):
            raise TypeError("picks is not a list")
    except (KeyError, TypeError) as err:
        raise MatchnasError(f"{path}: not a selections file from `matchnas search` ({err!r})") from None
    if digest != space.digest:
        raise MatchnasError(
            f"{path}: made for space '{body.get('space')}' ({digest}), the run's space is '{space.name}' ({space.digest})"
        )
    if body.get("classes") not in (None, classes):
        raise MatchnasError(f"{path}: classes {body['classes']} differ from the run's {classes}")
    from matchnas.search.budgets import format_cost

    targets, skipped = [], []
    for number, pick in enumerate(picks):
        try:
            budget = float(pick["budget"])
        except (KeyError, TypeError, ValueError):
            raise MatchnasError(f"{path}: pick {number} has no numeric budget") from None
        shown = format_cost(budget, metric)
        if pick.get("config") is None:
            cheapest = pick.get("cost")
            reason = "no config fits" + (f": the cheapest costs {format_cost(cheapest, metric)}" if cheapest else "")
            skipped.append({"budget": budget, "budget_label": shown, "reason": reason})
            continue
        config = SubnetConfig.from_dict(pick["config"])
        if config not in space:
            try:
                space.validate(config)
            except MatchnasError as err:
                raise MatchnasError(f"{path}: the pick for budget {shown}: {err}") from None
        targets.append(Target(config, budget, re.sub(r"[^A-Za-z0-9._-]+", "_", f"{metric}-{shown}")))
    if not targets:
        raise MatchnasError(f"{path}: no budget has a config (every budget is below the cheapest config)")
    source = {"selections": str(path), "metric": metric, "unit": body.get("unit"), "strategy": body.get("strategy")}
    return targets, skipped, source


def _check_out_dir(out_dir: Path, run_dir: Path, force: bool) -> None:
    out, run = out_dir.resolve(), run_dir.resolve()
    if out == run or out in run.parents:
        raise MatchnasError(f"--out {out_dir} would replace the run itself: choose another folder")
    if not out_dir.exists():
        return
    if not force:
        raise MatchnasError(f"{out_dir} already exists: choose another --out or add --force to replace it")
    if not out_dir.is_dir():
        raise MatchnasError(f"{out_dir} exists and is not a folder")
    if any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file():
        raise MatchnasError(f"{out_dir} holds files but no manifest.json: --force only replaces an export bundle")


def _move_into_place(work: Path, out_dir: Path) -> None:
    """Rename the finished bundle to ``out_dir``; an old bundle goes only after that succeeded."""
    old = None
    if out_dir.exists():  # named so that remove_leftovers finds it if we are killed right here
        old = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.{secrets.token_hex(4)}.old")
        os.replace(out_dir, old)
    try:
        os.replace(work, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)


# -- formats -------------------------------------------------------------------------------------
def _export_onnx(net, x: torch.Tensor, path: Path, meta: dict, threads: int, runs: int) -> dict:
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
    parity = _parity(reference, batched)
    parity["max_abs_logit_diff"] = max(parity["max_abs_logit_diff"], _max_diff(reference[: len(single)], single))
    parity["batch_sizes"] = sorted({1} | {len(images[i : i + 64]) for i in range(0, len(x), 64)})
    one = images[:1]
    latency = _latency(lambda: session.run(None, {"images": one}), runs)
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


def _executorch() -> dict[str, Callable]:
    """The ExecuTorch entry points, or a one-line error saying what to install."""
    try:
        from executorch.backends.xnnpack.partition import xnnpack_partitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.runtime import Runtime
    except ImportError:
        raise MatchnasError(f"format executorch needs ExecuTorch, which is not installed: {INSTALL_HINT}") from None
    partitioner = xnnpack_partitioner.XnnpackPartitioner
    return {"partitioner": partitioner, "lower": to_edge_transform_and_lower, "runtime": Runtime}


def _export_executorch(net, x: torch.Tensor, path: Path, meta: dict, threads: int, runs: int) -> dict:
    et = _executorch()
    from importlib.metadata import version

    one = x[:1].contiguous()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(net, (one,))
        lowered = et["lower"](program, partitioner=[et["partitioner"]()])
        path.write_bytes(lowered.to_executorch().buffer)
    try:  # XNNPACK runs on ExecuTorch's thread pool; without this hook it keeps its default size
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)
        pool_threads = portable_lib._threadpool_get_thread_count()
    except (ImportError, AttributeError):
        pool_threads = None
    method = et["runtime"].get().load_program(path).load_method("forward")
    with torch.no_grad():
        reference = net(x).numpy()
    outputs = np.concatenate([method.execute([x[i : i + 1].contiguous()])[0].numpy() for i in range(len(x))])
    parity = _parity(reference, outputs)
    parity["batch_sizes"] = [1]
    latency = _latency(lambda: method.execute([one]), runs)
    return {
        "format": "executorch",
        "input_shape": [1, int(x.shape[1]), int(x.shape[2]), int(x.shape[3])],
        "batch": "fixed at 1: a .pte runs one image per call",
        "output_shape": [1, int(reference.shape[1])],
        "backend": "XNNPACK",
        "parity": parity,
        "latency": {**latency, "runtime": f"executorch {version('executorch')} (XNNPACK)", "threads": pool_threads},
    }


# -- checks and timing ---------------------------------------------------------------------------
def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def _parity(reference: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
    return {
        "images": int(reference.shape[0]),
        "max_abs_logit_diff": _max_diff(reference, outputs),
        "top1_agreement": float((reference.argmax(1) == outputs.argmax(1)).mean()) if reference.shape == outputs.shape else 0.0,
    }


def _check_parity(name: str, fmt: str, parity: dict, tolerance: float) -> None:
    parity["tolerance"] = tolerance
    diff = parity["max_abs_logit_diff"]
    if not diff <= tolerance:
        raise MatchnasError(
            f"{name}.{SUFFIX[fmt].lstrip('.')}: {fmt} output differs from PyTorch by {diff:.3g} (max |logit|, "
            f"tolerance {tolerance:.3g}; top-1 agreement {100 * parity['top1_agreement']:.1f}% on "
            f"{parity['images']} images): nothing written"
        )


def _latency(run: Callable[[], Any], runs: int) -> dict[str, Any]:
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


def _summary(run_dir: Path, out_dir: Path, space: SearchSpace, manifest: dict, formats: tuple[str, ...]) -> str:
    lines = [f"exported {len(manifest['models'])} model(s) of {run_dir} (space {space.name}, {space.digest})"]
    head = f"{'model':>28} {'FLOPs':>9} {'params':>9} {'top-1':>7}"
    for fmt in formats:
        head += f" {fmt + ' |diff|':>17} {'agree':>6} {'ms':>7}"
    lines.append(head)
    for m in manifest["models"]:
        top1 = f"{100 * m['test_top1']:.2f}%" if m["test_top1"] is not None else "-"
        row = f"{m['name']:>28} {m['flops'] / 1e6:>8.2f}M {m['params'] / 1e6:>8.3f}M {top1:>7}"
        for fmt in formats:
            f = m["files"][fmt]
            row += f" {f['parity']['max_abs_logit_diff']:>17.2e} {100 * f['parity']['top1_agreement']:>5.1f}% {f['latency']['ms_median']:>7.3f}"
        lines.append(row)
    for s in manifest["skipped"]:
        lines.append(f"skipped budget {s['budget_label']}: {s['reason']}")
    lines.append(f"wrote {out_dir} (manifest.json)")
    return "\n".join(lines)
