"""Data-aware defaults: the settings a run leaves automatic (``None`` in
:class:`~matchnas.experiment.Experiment`) are chosen here from what the data holds
(:class:`~matchnas.data.survey.DataSurvey`) and the backbone, each with the one-line reason the
plan prints. Every rule names the measurement that chose it (docs/benchmarks.md); a rule no
measurement backs yet says so.

- **Labels**: a folder's labelled images are all labelled training data; a named benchmark source
  keeps 10 per class (its own labels are the benchmark's pool to draw from).
- **Validation**: none when the source has a test split; without one, a few labelled images per
  class are held out to evaluate on.
- **Working size**: small images (short side under :data:`PHOTO_SIDE`) are upsampled to
  :data:`SMALL_SIZE`, 64 px: Fashion-MNIST at 64 px beat 32 px by 4 points at the maxnet (1000
  steps, 2 seeds), and only there did bigger subnets score higher. Photos work at the backbone's pre-training resolution
  (224 px for Lite0 and MobileNetV3; not measured here on accuracy: no photo data set is reachable).
- **Space**: the backbone's space whose resolution ladder ends at the working size (32-64 px for
  small images, 128-224 px for photos, 24-32 px for a working size of 32 px or less).
- **Steps**: :data:`DEFAULT_STEPS`; or what fits a time budget at the measured step time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from matchnas.backbones import Backbone, get_backbone
from matchnas.data.survey import DataSurvey
from matchnas.errors import MatchnasError
from matchnas.experiment import Experiment
from matchnas.space_file import load_space

SMALL_SIZE = 64  # docs/benchmarks.md: 64 px beat 32 px at 1000 steps (maxnet 83.8 vs 79.8, 2 seeds)
PHOTO_SIDE = 128  # a short side from here up is a photo: it trains on the backbone's own ladder
DEFAULT_STEPS = 2000  # docs/benchmarks.md, "--protocol 64px": 2000 steps beat 1000 (+0.9 maxnet, +1.7 minnet)
NAMED_LABELS_PER_CLASS = 10  # a named benchmark source: its usual sparse-label setting
MIN_LABELLED = 2  # per class: fewer cannot train and evaluate (or validate) on the class
HELD_OUT_SHARE = 0.2  # without a test split: this share of each class's labels is evaluated on ...
MAX_HELD_OUT = 20  # ... up to this many per class


@dataclass(frozen=True)
class Choice:
    """One planned setting: the key, the value it took, and why (``"set by you"`` when given)."""

    key: str
    value: object
    reason: str


def resolve(experiment: Experiment, data: DataSurvey) -> tuple[Experiment, list[Choice]]:
    """Fill every automatic setting of ``experiment`` from ``data``; returns the resolved
    experiment (a copy) and one :class:`Choice` per planned setting, explicit ones included.

    Raises:
        MatchnasError: a labelled set too small to train and evaluate on (naming the class).
    """
    e = _copy(experiment)
    d, m, t = e.data, e.model, e.train
    backbone = get_backbone(m.backbone)
    choices: list[Choice] = []

    def choose(key: str, current, value, reason: str):
        choices.append(Choice(key, current if current is not None else value,
                              "set by you" if current is not None else reason))
        return current if current is not None else value

    d.val_per_class = choose("data.val_per_class", d.val_per_class, *_validation(data))
    if d.labels_per_class is None and d.label_fraction is None:
        if data.folder:
            d.label_fraction = 1.0
            choices.append(Choice("data.label_fraction", 1.0, "every image in labeled/ is labelled training data"))
        else:
            d.labels_per_class = NAMED_LABELS_PER_CLASS
            choices.append(Choice("data.labels_per_class", NAMED_LABELS_PER_CLASS,
                                  f"a named benchmark source: {NAMED_LABELS_PER_CLASS} of its labels per class"))
    else:
        key = "data.labels_per_class" if d.labels_per_class is not None else "data.label_fraction"
        choices.append(Choice(key, d.labels_per_class or d.label_fraction, "set by you"))
    _check_labels(data, d.val_per_class, d.labels_per_class)
    d.image_size = choose("data.image_size", d.image_size, *working_size(data, backbone))
    m.space = choose("model.space", m.space, *space_for(d.image_size, backbone))
    t.steps = choose("train.steps", t.steps, DEFAULT_STEPS,
                     "measured: 2000 steps beat 1000 on Fashion-MNIST at 64 px (docs/benchmarks.md)")
    e.validate()
    return e, choices


def working_size(data: DataSurvey, backbone: Backbone) -> tuple[int, str]:
    """The side images are stored and trained at, and why."""
    side = data.short_side
    if side >= PHOTO_SIDE:
        return backbone.resolution, (f"photos (median short side {side} px): the backbone's pre-training "
                                     f"resolution, {backbone.resolution} px")
    verb = "upsampled" if side < SMALL_SIZE else "resized"
    return SMALL_SIZE, (f"small images (median short side {side} px) are {verb} to {SMALL_SIZE} px: measured "
                        f"best (64 px beat 32 px by 4.0 points at the maxnet at 1000 steps, docs/benchmarks.md)")


def space_for(size: int, backbone: Backbone) -> tuple[str, str]:
    """The backbone's shipped space for a working size (the first of its ladders that reaches the
    size), and why."""
    for largest, name in backbone.spaces_by_size:
        if size <= largest:
            low = min(load_space(name).resolutions)
            return name, f"working size {size} px: the space of resolutions {low}-{largest} px"
    if backbone.spaces_by_size:
        largest, name = backbone.spaces_by_size[-1]
        return name, f"working size {size} px: the largest space that ships ({largest} px); images are resized to it"
    return backbone.space, f"working size {size} px: {backbone.name}'s default space"


def steps_for_time(seconds: float, fixed_seconds: float, seconds_per_step: float, budget: str) -> int:
    """The steps that fit ``seconds`` after ``fixed_seconds`` (loading, evaluation), capped at
    :data:`DEFAULT_STEPS` (more steps are not measured).

    Raises:
        MatchnasError: when not even one step fits (naming the budget and what a step costs).
    """
    steps = math.floor((seconds - fixed_seconds) / seconds_per_step)
    if steps < 1:
        raise MatchnasError(
            f"--time {budget} is too short: loading and evaluation take about {fixed_seconds:.0f} s and one step "
            f"{seconds_per_step:.2f} s on this machine; give at least {math.ceil(fixed_seconds + seconds_per_step)} s")
    return min(steps, DEFAULT_STEPS)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1.5h`` -> seconds; a one-line error otherwise."""
    units = {"s": 1, "m": 60, "h": 3600}
    body, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        value = float(body) * unit
    except ValueError:
        raise MatchnasError(f"--time expects a duration such as 90s, 30m or 2h, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise MatchnasError(f"--time must be a positive duration, got {text!r}")
    return value


def _validation(data: DataSurvey) -> tuple[int, str]:
    if data.test:
        return 0, f"evaluated on the {data.test:,} test images; no labels held out"
    held = max(1, min(MAX_HELD_OUT, math.floor(HELD_OUT_SHARE * min(data.labelled))))
    return held, f"no test split: {held} labelled images per class held out to evaluate on"


def _check_labels(data: DataSurvey, val_per_class: int, labels_per_class: int | None) -> None:
    need = max(MIN_LABELLED, val_per_class + (labels_per_class or 1))
    parts = [f"{labels_per_class or 1} to train on"] + ([f"{val_per_class} held out to evaluate on"] if val_per_class else [])
    why = " + ".join(parts) if labels_per_class or val_per_class else f"at least {MIN_LABELLED} labelled images per class"
    for name, count in zip(data.classes, data.labelled):
        if count < need:
            where = f"{data.name}/labeled/{name}" if data.folder else f"{data.name}, class {name!r}"
            fix = "add labelled images" + (" or a test/ folder" if val_per_class and data.folder else "")
            raise MatchnasError(f"{where}: {count} labelled image{'s' * (count != 1)}, fewer than the {need} "
                                f"needed ({why}); {fix}")


def _copy(experiment: Experiment) -> Experiment:
    return dataclasses.replace(experiment, **{f.name: dataclasses.replace(getattr(experiment, f.name))
                                              for f in dataclasses.fields(experiment)})
