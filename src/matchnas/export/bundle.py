"""``matchnas export``: extract, recalibrate, export and check each target, and move a complete
bundle folder into place (see :mod:`matchnas.export` for the protocol and tolerances)."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from matchnas.data import ImageSet, Normalisation
from matchnas.errors import MatchnasError
from matchnas.export.formats import REGISTRY, SUFFIX, TOLERANCE, parse_formats
from matchnas.export.manifest import manifest as build_manifest
from matchnas.export.manifest import model_entry, sha256
from matchnas.export.measured import BUDGET_TOLERANCE, check_tolerance, record_measurements
from matchnas.export.parity import check_parity
from matchnas.export.quantize import DROP_TOLERANCE, calibration_set, check_drop, file_key, file_suffix, parse_quantize, quantized_file
from matchnas.export.targets import Target, selection_targets, subnet_target
from matchnas.io import (as_path, atomic_write_json, check_writable, disk_full, no_space, read_json, remove_leftovers,
                         tree_bytes, work_dir)
from matchnas.evaluate import accuracy
from matchnas.lock import destination_lock
from matchnas.space import SearchSpace, SubnetConfig


@dataclass(frozen=True)
class ExportSettings:
    """How every file of a bundle is written and checked (the arguments of :func:`export_run`)."""

    formats: tuple[str, ...]
    tolerance: float | None
    parity_images: int
    threads: int
    latency_runs: int
    quantize: str | None
    int8_tolerance: float
    calibration_images: int | None


@dataclass(frozen=True)
class CheckImages:
    """The images an export measures on: test top-1 (and the int8 drop) on the run's held-out split
    (:attr:`matchnas.run.Run.held_out_split`), parity on the same images, or on the labelled training
    images when the run holds nothing out."""

    held_out: ImageSet | None
    split: str | None  # "test" | "val" | None
    parity: ImageSet
    parity_split: str


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
    quantize: str | None = None,
    int8_tolerance: float = DROP_TOLERANCE,
    calibration_images: int | None = None,
    strict: bool = False, budget_tolerance: float = BUDGET_TOLERANCE,
) -> str:
    """Export the selected subnets of a trained run as a bundle; returns a summary table.

    Steps: check the arguments (nothing is read or written before); open the run and read which
    configs to export; choose the images to measure on; under the destination's lock, write each
    model's files into a hidden work folder and check them, write the manifest, and move the
    folder into place.

    Args:
        run_dir: a trained run (``matchnas train --out``).
        out_dir: the bundle folder to create: model files plus ``manifest.json``.
        formats: ``"onnx"``, ``"executorch"``, ``"litert"`` or several (a list or ``"onnx,litert"``).
        selections: a ``selections.json`` from ``matchnas search``; default: the run's own, when
            neither this nor ``subnet`` is given.
        subnet: ``"max"``, ``"min"`` or a config JSON file: export this one model (budget null).
        force: replace ``out_dir`` if it holds an earlier bundle.
        tolerance: max |logit difference| allowed against PyTorch; None: :data:`TOLERANCE`.
        parity_images: held-out images compared (at the subnet's resolution).
        threads: intra-op threads of the runtimes for the parity run and the latency.
        latency_runs: timed batch-1 runs (after ``latency_runs // 5`` warm-up runs).
        quantize: ``"int8"``: also write each file as a static int8 model (see
            :mod:`matchnas.export.quantize`); None: float32 only.
        int8_tolerance: the most percentage points of test top-1 an int8 file may lose.
        calibration_images: int8 calibration images; None: the run's ``train.recalibration_images``.
        strict: fail when a file's measured cost is over its budget by more than budget_tolerance.

    Raises:
        MatchnasError: bad input (nothing is written) or an export above tolerance.
    """
    run_dir, out_dir = Path(run_dir), _destination(out_dir)
    settings = _settings(formats, tolerance, parity_images, threads, latency_runs, quantize, int8_tolerance,
                         calibration_images)
    check_tolerance(budget_tolerance)
    _check_out_dir(out_dir, run_dir, force)
    selections, selections_body = _selections(run_dir, selections, subnet)

    # The training stack loads only once the arguments are sane.
    from matchnas.run import open_run

    run = open_run(run_dir)
    if subnet is not None:
        targets, skipped, source = subnet_target(run.space, subnet), [], {"subnet": str(subnet)}
    else:
        targets, skipped, source = selection_targets(Path(selections), selections_body, run.space, run.classes)
    images = check_images(run, settings.quantize)
    header = {**source, "skipped": skipped, "test_split": images.split,
              "parity_images": {"split": images.parity_split, "count": min(parity_images, len(images.parity))}}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock, work = destination_lock(out_dir, "export").acquire(), None  # one export into out_dir at a time
    try:
        _check_out_dir(out_dir, run_dir, force)  # again under the lock: another export may have finished
        remove_leftovers(out_dir.parent, [out_dir.name])  # of exports killed before they finished
        work = work_dir(out_dir)
        models = _export_models(run, targets, images, settings, work)
        header["budget_misses"] = misses = record_measurements(models, work, source.get("metric"), budget_tolerance, strict)
        manifest = build_manifest(run_dir, run.space, run.supernet.num_classes, header, models)
        atomic_write_json(work / "manifest.json", manifest)
        _move_into_place(work, out_dir)
    except BaseException as err:
        _discard(work, out_dir, err)
        raise
    finally:
        lock.release()
    return "\n".join([_summary(run_dir, out_dir, run.space, manifest, settings.formats), *misses])


def _destination(out_dir: str | Path) -> Path:
    out_dir = as_path(out_dir, "--out")
    check_writable(out_dir, "--out", folder=True)  # first: a loop of links cannot even be resolved
    if out_dir.is_symlink():  # replace the bundle the link points to, and keep the link
        out_dir = out_dir.resolve()
    return out_dir


def _settings(formats, tolerance, parity_images, threads, latency_runs, quantize, int8_tolerance,
              calibration_images) -> ExportSettings:
    formats = parse_formats(formats)
    if tolerance is not None and not tolerance >= 0:
        raise MatchnasError(f"tolerance must be >= 0, got {tolerance}")
    if threads < 1 or latency_runs < 1 or parity_images < 1:
        raise MatchnasError("threads, latency runs and parity images must be at least 1")
    quantize = parse_quantize(quantize)
    if not int8_tolerance >= 0 or (calibration_images is not None and calibration_images < 1):
        raise MatchnasError(f"int8 tolerance must be >= 0 and calibration images >= 1, got {int8_tolerance}, {calibration_images}")
    return ExportSettings(formats, tolerance, parity_images, threads, latency_runs, quantize, int8_tolerance,
                          calibration_images)


def _selections(run_dir: Path, selections: str | Path | None, subnet: str | Path | None) -> tuple[Path | None, Any]:
    """The selections file to export (the run's own when neither it nor ``subnet`` is given) and
    its contents; None and None with ``subnet``."""
    if selections is not None and subnet is not None:
        raise MatchnasError("give --selections or --subnet, not both")
    if selections is None and subnet is None:
        selections = run_dir / "selections.json"
        if not selections.is_file():
            raise MatchnasError(f"{run_dir} has no selections.json: run `matchnas search` or give --selections/--subnet")
    body = read_json(selections, "a selections file from `matchnas search`") if selections is not None else None
    if subnet is not None and str(subnet) not in ("max", "min") and not Path(subnet).is_file():
        raise MatchnasError(f"--subnet: no such file {subnet}")
    return (Path(selections) if selections is not None else None), body


def check_images(run, quantize: str | None) -> CheckImages:
    """The images the export of ``run`` measures on (see :class:`CheckImages`)."""
    split = run.held_out_split
    if split is None:
        if quantize is not None:
            raise MatchnasError(f"--quantize {quantize} measures top-1 on held-out images: {run.dir} has no test or validation split")
        return CheckImages(None, None, run.data.sets.labeled, "labeled")
    held_out = run.images(split)
    return CheckImages(held_out, split, held_out, split)


def preprocess(run) -> dict[str, Any]:
    """How a bundle's reader turns an image file into this run's model input (the manifest's
    ``preprocess``, without the model's resolution)."""
    mean, std = run.normalisation.manifest_values()  # the one the run trained with
    return {
        "color": "grey" if run.data.sets.labeled.images.shape[1] == 1 else "rgb",
        "fit_size": run.experiment.data.image_size,
        "channels": run.supernet.in_chans,
        # EfficientNet-Lite: 127/128 as scalars (the form every reader of a manifest understands,
        # older matchnas predict included); per-channel (R, G, B) lists otherwise, e.g.
        # MobileNetV3's ImageNet mean/std
        "mean": mean,
        "std": std,
        "layout": "NCHW",
        "steps": "to grey or RGB; short side to fit_size and centre crop (bilinear, antialiased); "
        "bilinear to resolution (antialiased); (x - mean) / std on 0..255; grey repeated to channels",
    }


def _export_models(run, targets: list[Target], images: CheckImages, settings: ExportSettings, work: Path) -> list[dict]:
    """One manifest entry per target, its files written into ``work`` and checked. A config that
    answers several budgets is extracted and exported once, its files copied."""
    space, k, c = run.space, run.supernet.num_classes, run.supernet.in_chans
    spec = preprocess(run)
    subnets: dict[SubnetConfig, tuple] = {}  # config -> (net, top-1, int8 inputs)
    done: dict[tuple[SubnetConfig, str], dict] = {}  # (config, file key) -> the record of its first file
    models = []
    for target in targets:
        config = target.config
        if config not in subnets:
            subnets[config] = _subnet(run, config, images, settings)
        net, top1, int8_inputs = subnets[config]
        entry = model_entry(target, top1, space, k, c, run.classes, {**spec, "resolution": config.resolution})
        name = entry["name"]
        x = run.normalisation(images.parity.images[: settings.parity_images], size=config.resolution, channels=c)
        meta = {"classes": run.classes, "preprocess": entry["preprocess"], "config": entry["config"]}
        for fmt in settings.formats:
            tolerance = TOLERANCE[fmt] if settings.tolerance is None else settings.tolerance
            float_path = work / f"{name}{SUFFIX[fmt]}"
            _add_file(entry, fmt, float_path, done, config,
                      make=lambda path: REGISTRY[fmt].exporter(net, x, path, meta, settings.threads, settings.latency_runs),
                      check=lambda path, record: check_parity(path.name, fmt, record["parity"], tolerance))
            if settings.quantize is None:
                continue
            _add_file(entry, file_key(fmt, settings.quantize), work / f"{name}{file_suffix(SUFFIX[fmt], settings.quantize)}",
                      done, config,
                      make=lambda path: quantized_file(REGISTRY[fmt].quantizer, net, float_path, path, *int8_inputs,
                                                       top1, settings.threads, settings.latency_runs),
                      check=lambda path, record: check_drop(path.name, record, settings.int8_tolerance),
                      float_path=float_path)
        models.append(entry)
    return models


def _add_file(entry: dict, key: str, path: Path, done: dict, config: SubnetConfig, make, check,
              float_path: Path | None = None) -> None:
    """Write one file of a model (``make(path)`` returns its record), time and ``check`` it, and
    record it in ``entry["files"][key]``; a file the same config already has is copied instead.
    An int8 file also records the size of its ``float_path``."""
    if (config, key) in done:  # the same config answers two budgets: same model, copied
        shutil.copyfile(path.parent / done[config, key]["file"], path)
        record = dict(done[config, key])
    else:
        began = time.perf_counter()
        record = make(path)
        record["export_seconds"] = round(time.perf_counter() - began, 3)
        check(path, record)
        done[config, key] = record
    record.update(file=path.name, sha256=sha256(path), bytes=path.stat().st_size)
    if float_path is not None:
        record["float32_bytes"] = float_path.stat().st_size
    entry["files"][key] = record


def _subnet(run, config: SubnetConfig, images: CheckImages, settings: ExportSettings) -> tuple:
    """The extracted subnet with BN re-calibrated (as :meth:`~matchnas.run.Run.top1` measures it),
    its test top-1 (None without held-out images) and, with ``quantize``, its int8 inputs."""
    # Exporters want the default memory format (XNNPACK's channels-last pass refuses weights that
    # already are channels-last).
    net = run.subnet(config).to(memory_format=torch.contiguous_format).eval()
    held_out, norm = images.held_out, run.normalisation
    top1 = accuracy(net, held_out, config.resolution, normalisation=norm) if held_out is not None else None
    if settings.quantize is None:
        return net, top1, None
    t = run.experiment.train
    n_calibration = settings.calibration_images or t.recalibration_images
    inputs = _int8_inputs(net, held_out, run.data.recalibration_pool, config.resolution, run.supernet.in_chans,
                          n_calibration, t.seed, run.data.flip, norm)
    return net, top1, inputs


def _int8_inputs(net, held_out, pool, resolution: int, c: int, n_calibration: int, seed: int, flip: bool,
                 norm: Normalisation) -> tuple:
    """What a quantizer needs for one config: calibration images, the held-out images and labels,
    and the float32 subnet's logits and top-1 on them."""
    images = norm(held_out.images, size=resolution, channels=c).numpy()
    with torch.no_grad():
        logits = torch.cat([net(torch.from_numpy(images[i : i + 256])) for i in range(0, len(images), 256)]).numpy()
    calibration = calibration_set(pool, resolution, n_calibration, seed, flip, norm)
    return calibration, (images, held_out.labels.numpy()), logits


def _discard(work: Path | None, out_dir: Path, err: BaseException) -> None:
    """Remove the unfinished bundle; a full disk becomes one line saying how much it needed."""
    if work is None:
        return
    full = isinstance(err, (OSError, RuntimeError)) and disk_full(err, out_dir.parent)
    written = tree_bytes(work) if full else 0
    shutil.rmtree(work, ignore_errors=True)
    if full:
        raise MatchnasError(no_space(out_dir, written)) from None


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


def _summary(run_dir: Path, out_dir: Path, space: SearchSpace, manifest: dict, formats: tuple[str, ...]) -> str:
    lines = [f"exported {len(manifest['models'])} model(s) of {run_dir} (space {space.name}, {space.digest})"]
    keys = [k for k in manifest["models"][0]["files"] if k not in formats]  # the int8 files, if any
    head = f"{'model':>28} {'FLOPs':>9} {'params':>9} {'top-1':>7}"
    for fmt in formats:
        head += f" {fmt + ' |diff|':>17} {'agree':>6} {'ms':>7}"
    for key in keys:
        head += f" {key + ' top-1':>16} {'drop':>6} {'agree':>6} {'ms':>7}"
    lines.append(head)
    for m in manifest["models"]:
        top1 = f"{100 * m['test_top1']:.2f}%" if m["test_top1"] is not None else "-"
        row = f"{m['name']:>28} {m['flops'] / 1e6:>8.2f}M {m['params'] / 1e6:>8.3f}M {top1:>7}"
        for fmt in formats:
            f = m["files"][fmt]
            row += f" {f['parity']['max_abs_logit_diff']:>17.2e} {100 * f['parity']['top1_agreement']:>5.1f}% {f['latency']['ms_median']:>7.3f}"
        for key in keys:
            f = m["files"][key]
            row += (f" {100 * f['test_top1']:>15.2f}% {f['top1_drop_points']:>6.2f} "
                    f"{100 * f['top1_agreement_with_float32']:>5.1f}% {f['latency']['ms_median']:>7.3f}")
        lines.append(row)
    for s in manifest["skipped"]:
        lines.append(f"skipped budget {s['budget_label']}: {s['reason']}")
    lines.append(f"wrote {out_dir} (manifest.json)")
    return "\n".join(lines)
