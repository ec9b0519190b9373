"""``matchnas predict``: classify image files with an exported ONNX model through onnxruntime, or
a ``.tflite`` file through LiteRT (``ai-edge-litert``, :mod:`matchnas.litert_runtime`).

This module needs numpy, Pillow and onnxruntime (LiteRT for a ``.tflite``) only, never PyTorch, so
a bundle can be checked on a machine that has no training stack. It imports nothing from matchnas
but the error type, file checks and the LiteRT runner.

What it reads, in order of preference:
- a bundle folder: ``manifest.json`` names the models, their preprocessing and class names; the
  largest model (by FLOPs) unless ``budget`` picks another; the file's sha256 is checked;
- an ``.onnx`` or ``.tflite`` file listed in the ``manifest.json`` beside it: that entry (an int8
  ``.tflite`` takes int8 input: the float32 image is quantized with the file's own scale and zero
  point, and the logits dequantized);
- any other ``.onnx`` file: the preprocessing and class names matchnas embeds in its ONNX files
  (metadata ``matchnas.preprocess``, ``matchnas.classes``); else the input size from the model's
  input shape (or ``resolution`` when that is dynamic), RGB, class indices as names, and the
  input normalisation the caller names (``normalisation``: one of :data:`NORMALISATIONS`); a
  ``.tflite`` never records one, so the same holds for it. Such a file records no normalisation, and guessing one would give confident wrong answers, so without
  that argument it is refused with a one-line error.

``mean``/``std`` in a manifest's ``preprocess`` are numbers (EfficientNet-Lite's 127/128, also in
bundles whose manifest predates per-channel values) or per-channel R, G, B lists (MobileNetV3: ImageNet's
on 0..255); a grey model takes the lists' averages, as training does.

Preprocessing repeats training's (:mod:`matchnas.data.folders` then
:func:`matchnas.data.to_model_input`): EXIF orientation; grey (``L``) or RGB as the model was
trained; short side to ``fit_size`` and centre crop (bilinear, antialiased); bilinear resize to the
resolution in float (Pillow's antialiased bilinear equals torch's ``antialias=True`` to ~1e-4 of a
grey level); ``(x - mean) / std`` on 0..255 (per channel after the repeat); grey repeated to the
model's channels.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from matchnas.errors import MatchnasError
from matchnas.io import check_readable, read_json

MANIFEST_VERSIONS = (1,)  # manifest format versions this module reads (matchnas.export writes 1)
_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}
ONNX_KEYS = ("onnx", "onnx-int8")  # manifest keys of the float32 and int8 ONNX files (matchnas.export.quantize)
FILE_KEYS = (*ONNX_KEYS, "litert", "litert-int8")  # the files predict runs when given one by name
# What a bare .onnx file (no manifest, no matchnas metadata) may be told its normalisation is, as
# a manifest writes it (matchnas.backbones holds the same values; tests check they agree).
NORMALISATIONS = {
    "lite": {"mean": 127.0, "std": 128.0},  # EfficientNet-Lite (TFLite): (x - 127) / 128
    "imagenet": {"mean": [0.485 * 255, 0.456 * 255, 0.406 * 255],  # MobileNetV3 (timm, torchvision)
                 "std": [0.229 * 255, 0.224 * 255, 0.225 * 255]},
}


@dataclass
class LoadedModel:
    """An onnxruntime session (or a LiteRT file behind the same interface) and how to feed it."""

    path: Path
    session: Any
    preprocess: dict[str, Any]  # color, fit_size, resolution, channels, mean, std
    classes: list[str] | None
    name: str


def predict(
    model_or_bundle: str | Path,
    images: list[str | Path],
    top_k: int = 5,
    budget: str | None = None,
    resolution: int | None = None,
    threads: int | None = None,
    int8: bool = False,
    normalisation: str | None = None,
) -> str:
    """Classify ``images``; returns, per image, its file and top-k labels with probabilities.

    Args:
        model_or_bundle: an export bundle folder, an ``.onnx`` or a ``.tflite`` file.
        images: image files Pillow can read.
        top_k: how many classes to show per image.
        budget: in a bundle, the model answering this budget (its label as in the manifest,
            e.g. ``4M`` or ``flops-4.00M``, a number, or a config id); default: the largest.
        resolution: input size for an ONNX file that does not say (dynamic input shape).
        threads: onnxruntime intra-op threads or LiteRT threads (default: the runtime's choice).
        int8: in a bundle, run the int8 ONNX file (``export --quantize int8``) instead of float32.
        normalisation: for an ONNX file that records none (not a matchnas export), its input
            normalisation by name (:data:`NORMALISATIONS`: ``lite`` or ``imagenet``).
    """
    model = load_model(model_or_bundle, budget, resolution, threads, int8, normalisation)
    results = classify(model, images, top_k)
    runtime = "LiteRT" if model.path.suffix == ".tflite" else "onnxruntime"
    lines = [f"model {model.name} ({model.path.name}, {model.preprocess['resolution']} px, {runtime})"]
    for path, top in zip(images, results):
        lines.append(str(path))
        width = max(len(label) for label, _ in top)
        lines.extend(f"  {rank}. {label:<{width}}  {100 * p:6.2f}%" for rank, (label, p) in enumerate(top, 1))
    return "\n".join(lines)


def classify(model: LoadedModel, images: list[str | Path], top_k: int = 5) -> list[list[tuple[str, float]]]:
    """Per image, the ``top_k`` (label, probability) pairs, most probable first."""
    if top_k < 1:
        raise MatchnasError(f"top-k must be at least 1, got {top_k}")
    if not images:
        raise MatchnasError("no images given")
    batch = [preprocess_image(path, model.preprocess) for path in images]  # all read before any run
    name = model.session.get_inputs()[0].name
    results = []
    for x in batch:
        logits = model.session.run(None, {name: x})[0][0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")[:top_k]
        labels = model.classes or [str(i) for i in range(len(probs))]
        results.append([(labels[i], float(probs[i])) for i in order])
    return results


def preprocess_image(path: str | Path, spec: dict[str, Any]) -> np.ndarray:
    """One image file as float32 ``1 x channels x resolution x resolution`` model input."""
    grey = spec["color"] == "grey"
    fit, size = int(spec.get("fit_size") or spec["resolution"]), int(spec["resolution"])
    try:
        with Image.open(path) as file:
            img = ImageOps.exif_transpose(file)
            if img.mode in ("I", "I;16"):  # 16-bit grey (PNG): keep the top 8 bits, as training does
                img = img.point(lambda v: v / 256).convert("L")
            img = img.convert("L" if grey else "RGB")
            img = ImageOps.fit(img, (fit, fit), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise MatchnasError(f"{path}: cannot read image ({err})") from None
    planes = pixels[None] if grey else pixels.transpose(2, 0, 1)
    if fit != size:  # in float, as training resizes the stored uint8 images (mode F: 32-bit float)
        planes = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(p)).resize((size, size), Image.Resampling.BILINEAR)) for p in planes])
    channels = int(spec.get("channels", 3))
    mean, std = spec["mean"], spec["std"]
    if isinstance(mean, (int, float)):  # one value for every channel: the arithmetic training did
        x = (planes - float(mean)) / float(std)
        if x.shape[0] != channels:
            x = np.repeat(x, channels, axis=0)
        return np.ascontiguousarray(x[None], dtype=np.float32)
    if planes.shape[0] != channels:
        planes = np.repeat(planes, channels, axis=0)
    mean_a, std_a = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    if channels == 1:  # a grey model takes the averages (matchnas.data.to_model_input)
        mean_a, std_a = mean_a.mean(keepdims=True), std_a.mean(keepdims=True)
    x = (planes - mean_a[:, None, None]) / std_a[:, None, None]
    return np.ascontiguousarray(x[None], dtype=np.float32)


def load_model(
    model_or_bundle: str | Path, budget: str | None = None, resolution: int | None = None, threads: int | None = None,
    int8: bool = False, normalisation: str | None = None,
) -> LoadedModel:
    """The ONNX model of a bundle folder, or an ONNX or ``.tflite`` file, with its preprocessing and
    class names; an int8 file (``*.int8.onnx``, ``*.int8.tflite``) runs the same way.
    ``normalisation`` names the input normalisation of a file that records none (see
    :func:`predict`); a model that records its own refuses a different one."""
    if normalisation is not None and normalisation not in NORMALISATIONS:
        raise MatchnasError(f"unknown normalisation '{normalisation}': choose from {', '.join(NORMALISATIONS)}")
    path = Path(model_or_bundle)
    if not path.exists():
        raise MatchnasError(f"{path}: no such model file or bundle folder")
    entry, key = None, ONNX_KEYS[1] if int8 else ONNX_KEYS[0]
    if path.is_dir():
        manifest = _read_manifest(path / "manifest.json")
        entry = _pick(manifest, budget, path, key)
        path = path / entry["files"][key]["file"]
    else:
        if path.suffix == ".pte":
            raise MatchnasError(f"{path}: predict runs ONNX and .tflite models; a .pte runs in the ExecuTorch runtime")
        beside = path.parent / "manifest.json"
        if beside.is_file():
            manifest = _read_manifest(beside)
            found = [(m, k) for m in manifest["models"] for k in FILE_KEYS if m["files"].get(k, {}).get("file") == path.name]
            entry, key = found[0] if found else (None, key)
        if budget is not None or int8:
            raise MatchnasError("--budget and --int8 pick a model of a bundle folder, not of a single model file")
    if entry is not None:
        expected = entry["files"][key]["sha256"]
        if not path.is_file() or _sha256(path) != expected:
            raise MatchnasError(f"{path}: missing, or changed since export (sha256 differs from manifest.json)")
    session = _session(path, threads)
    if entry is not None:
        spec, classes = dict(entry["preprocess"]), entry.get("classes")
    else:
        spec, classes = _spec_from_model(session, path, resolution, normalisation)
    _check_normalisation(path, spec, normalisation)
    if resolution is not None and int(resolution) != int(spec["resolution"]):
        raise MatchnasError(f"{path} takes {spec['resolution']} px images; --resolution {resolution} differs")
    outputs = session.get_outputs()[0].shape[-1]
    if classes is not None and isinstance(outputs, int) and outputs != len(classes):
        raise MatchnasError(f"{path}: {outputs} outputs but {len(classes)} class names")
    name = entry["name"] if entry is not None else path.name
    return LoadedModel(path, session, spec, classes, name)


def _read_manifest(path: Path) -> dict:
    """The bundle's manifest, its structure checked once here so that no later lookup can fail."""
    if not path.exists():
        raise MatchnasError(f"{path.parent}: not an export bundle (no manifest.json)")
    manifest = read_json(path, "an export bundle's manifest")
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise MatchnasError(f"{path}: not a matchnas manifest (no format_version)")
    version = manifest["format_version"]
    if version not in MANIFEST_VERSIONS:
        raise MatchnasError(f"{path}: manifest format {version}; this matchnas reads {', '.join(map(str, MANIFEST_VERSIONS))}")
    models = manifest.get("models")
    if not isinstance(models, list):
        raise MatchnasError(f"{path}: 'models' must be a list of model entries")
    for i, entry in enumerate(models):
        problem = _entry_problem(entry)
        if problem:
            raise MatchnasError(f"{path}: models[{i}] {problem}")
    return manifest


def _entry_problem(entry: Any) -> str | None:
    """What is wrong with a manifest's model entry (None: nothing)."""
    if not isinstance(entry, dict):
        return "is not a mapping"
    for key, kind in (("name", str), ("config_id", str), ("flops", (int, float)), ("files", dict)):
        if not isinstance(entry.get(key), kind):
            return f"has no valid '{key}'"
    for fmt, record in entry["files"].items():
        if not isinstance(record, dict) or not isinstance(record.get("file"), str) or not isinstance(record.get("sha256"), str):
            return f"files.{fmt} needs 'file' and 'sha256'"
    if any(k in entry["files"] for k in FILE_KEYS):
        spec = entry.get("preprocess")
        if not isinstance(spec, dict) or "color" not in spec or not isinstance(spec.get("resolution"), (int, float)) \
                or not all(_is_normalisation(spec.get(k)) for k in ("mean", "std")):
            return "has no valid 'preprocess' (color, resolution, mean, std: a number or 3 numbers)"
        if any("/" in entry["files"][k]["file"] or "\\" in entry["files"][k]["file"] for k in FILE_KEYS if k in entry["files"]):
            return "names a model file outside the bundle"
    return None


def _is_normalisation(value: Any) -> bool:
    """A manifest's ``mean``/``std``: one number, or one per channel (R, G, B)."""
    if isinstance(value, list):
        return len(value) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pick(manifest: dict, budget: str | None, folder: Path, key: str = "onnx") -> dict:
    """The bundle's model for ``budget`` (label, number or config id), or its largest ONNX model;
    ``key``: ``"onnx"`` (float32) or ``"onnx-int8"``."""
    models = [m for m in manifest["models"] if key in m["files"]]
    if not models:
        how = "--format onnx --quantize int8" if key != "onnx" else "--format onnx"
        raise MatchnasError(f"{folder}: the bundle has no {key} model (export it with {how})")
    if budget is None:
        return max(models, key=lambda m: m["flops"])
    wanted = str(budget).strip()
    value = _number(wanted)
    for m in models:
        label = m.get("budget_label") or ""
        if wanted in (label, m["config_id"], m["name"]) or label.endswith(f"-{wanted}"):
            return m
        if value is not None and m.get("budget") is not None and abs(m["budget"] - value) <= 1e-9 * max(1.0, value):
            return m
    known = ", ".join(m.get("budget_label") or m["name"] for m in models)
    raise MatchnasError(f"{folder}: no model for budget '{budget}' (the bundle has: {known})")


def _number(text: str) -> float | None:
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([KMG]?)", text, flags=re.IGNORECASE)
    return float(match.group(1)) * _SUFFIX[match.group(2).upper()] if match else None


def _session(path: Path, threads: int | None):
    if path.suffix == ".tflite":
        from matchnas.litert_runtime import LiteRTSession

        return LiteRTSession(path, threads)
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    # onnxruntime's own exception types (not subclasses of RuntimeError) for a bad model file
    bad_file = (state.Fail, state.InvalidProtobuf, state.InvalidGraph, state.NoSuchFile, state.InvalidArgument,
                state.NotImplemented, state.RuntimeException)
    check_readable(path, "an ONNX model")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except bad_file as err:
        raise MatchnasError(f"{path}: onnxruntime cannot load it ({str(err).splitlines()[0][:200]})") from None


def _check_normalisation(path: Path, spec: dict, name: str | None) -> None:
    """Refuse a named normalisation that contradicts the one the model records."""
    if name is None:
        return
    wanted = NORMALISATIONS[name]
    if not all(_close(spec[k], wanted[k]) for k in ("mean", "std")):
        raise MatchnasError(f"{path} records its input normalisation (mean {spec['mean']}, std {spec['std']}); "
                            f"--normalisation {name} differs: leave it out")


def _close(a, b) -> bool:
    """Scalar or 3-list normalisation values equal to float32 rounding (a scalar stands for 3)."""
    a, b = ([a] * 3 if isinstance(a, (int, float)) else a), ([b] * 3 if isinstance(b, (int, float)) else b)
    return all(abs(float(x) - float(y)) <= 1e-4 * max(1.0, abs(float(y))) for x, y in zip(a, b))


def _spec_from_model(session, path: Path, resolution: int | None,
                     normalisation: str | None) -> tuple[dict, list[str] | None]:
    """Preprocessing and classes from the model's matchnas metadata, else from its input shape
    and the ``normalisation`` the caller names."""
    meta = session.get_modelmeta().custom_metadata_map
    try:
        if "matchnas.preprocess" in meta:
            classes = json.loads(meta["matchnas.classes"]) if "matchnas.classes" in meta else None
            return json.loads(meta["matchnas.preprocess"]), classes
    except json.JSONDecodeError:
        pass
    shape = session.get_inputs()[0].shape  # e.g. ['batch', 3, 224, 224]
    if len(shape) != 4:
        raise MatchnasError(f"{path}: expected an N x C x H x W image input, got shape {shape}")
    channels = shape[1] if isinstance(shape[1], int) else 3
    side = shape[2] if isinstance(shape[2], int) and shape[2] == shape[3] else None
    if side is None and resolution is None:
        raise MatchnasError(f"{path}: the input size is dynamic ({shape}): give --resolution")
    if normalisation is None:
        why = "a .tflite away from its manifest.json" if path.suffix == ".tflite" else "not a matchnas export"
        raise MatchnasError(f"{path} records no input normalisation ({why}): "
                            f"give --normalisation {' or '.join(NORMALISATIONS)}")
    size = int(side or resolution)
    spec = {"color": "rgb" if channels == 3 else "grey", "fit_size": size, "resolution": size,
            "channels": channels, **NORMALISATIONS[normalisation]}
    return spec, None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    check_readable(path, "a model file of the bundle")
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
