"""Experiment configuration: typed dataclasses with defaults in code, one YAML file per
experiment, and ``--set section.key=value`` overrides. Unknown keys and ill-typed values are
errors that name the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from matchnas.errors import MatchnasError
from matchnas.io import read_yaml


@dataclass
class DataConfig:
    source: str = "digits"  # digits | fashion-mnist | cifar10 | cifar100 | a folder of images
    data_dir: str | None = None  # where the source's files are (default: the source's usual place)
    # None ("auto") below: chosen from the data by matchnas.defaults when the run is planned, and
    # recorded in the run's experiment.yaml as the value it took.
    image_size: int | None = None  # images are stored at this size; subnets resize to their resolution
    labels_per_class: int | None = None  # auto: every labelled image of a folder, 10 per class of a named source
    label_fraction: float | None = None  # instead of labels_per_class (1.0: all not held out for validation)
    val_per_class: int | None = None  # labelled validation images per class; auto: 0, or a few without a test split
    max_unlabeled: int | None = None  # cap on the unlabelled pool (seeded)
    flip: bool | None = None  # horizontal flips in the weak view; None: the source's default


@dataclass
class ModelConfig:
    backbone: str = "efficientnet-lite0"
    space: str | None = None  # a shipped space name or a YAML file; None: the backbone's for the image size
    weights: str | None = None  # a local weights file (.pth / .safetensors); None: the backbone's package or URL
    dropout: float = 0.2  # before the classifier


@dataclass
class TrainConfig:
    steps: int | None = None  # auto: matchnas.defaults.DEFAULT_STEPS, or what fits `--time`
    batch_size: int = 32  # labelled images per step (B)
    unlabeled_ratio: int = 1  # mu: unlabelled images per step = mu * B
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-5  # not on biases, BN or kernel transforms
    warmup_steps: int = 25
    # random subnets per step besides the max and min (sandwich rule); 1 trains in 0.83x the time but the
    # 19-35 MFLOPs picks lost 0.6-0.7 points on Fashion-MNIST, two seeds (docs/benchmarks.md, "The sandwich's size")
    n_random: int = 2
    tau: float = 0.95  # pseudo-label confidence threshold
    label_smoothing: float = 0.0  # eps; 0 by default: 0.1 starves tau (docs/method.md, Pitfalls)
    lambda_u: float = 1.0
    lambda_kd: float = 1.0
    loss: str = "full"  # sup | fm | kd | full
    pseudo_labels: str = "maxnet"  # maxnet | self
    single: str | None = None  # None: the supernet; "max", "min" or a config JSON: one fixed subnet
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    # fp32 | bf16 (autocast, CUDA only). fp32 by measurement: on an H200 a sandwich step of these
    # small nets is launch-bound, and autocast's casts make bf16 slower (0.12 s against 0.10 s).
    precision: str = "fp32"
    sync_bn: bool = False  # under torchrun: batch statistics over all ranks
    checkpoint_every: int = 50
    recalibration_images: int = 512  # weak-view training images used to re-estimate BN
    # Training levers (train/levers.py; docs/method.md, "Training levers"). A default differs from
    # the papers' plain sandwich only where a measurement says so (docs/benchmarks.md, "The lever screen").
    # The teacher first (OFA's progressive shrinking; DepS, arXiv 2407.06167): for the first
    # ``teacher_warmup`` fraction of the steps only the maxnet trains (labels + FixMatch; students
    # are not even forwarded), then the students' loss weight ramps linearly from 0 to 1 over the
    # next ``student_ramp`` fraction of the steps. 0.2 + 0.2, measured on Fashion-MNIST (2 seeds):
    # +3.1 points at the maxnet, +2.6 at the minnet over 0 + 0; a warm-up step trains one subnet,
    # not four.
    teacher_warmup: float = 0.2
    student_ramp: float = 0.2
    # Roles in the sandwich (BigNAS, AlphaNet): the weight of the students' labelled and FixMatch
    # terms; 0 = students learn only by distillation from the maxnet.
    student_sup_weight: float = 1.0
    distill_labelled: bool = False  # students also distil the maxnet's logits on the labelled batch
    distill_view: str = "weak"  # weak | strong: the unlabelled view the students distil on
    # NASViT (ICLR 2022): project the students' summed gradient off the maxnet's when they conflict.
    project_conflicts: bool = False
    # Fine-tuning schedule: lr multiplier of the pre-trained body (the new classifier keeps ``lr``),
    # and the cosine schedule's final lr as a fraction of ``lr``.
    body_lr_scale: float = 1.0
    final_lr: float = 0.0
    # Mean teacher: the pseudo-labels and distillation targets come from an exponential
    # moving average of the weights with this decay (train/levers.py); 0 = the online maxnet.
    ema_teacher: float = 0.0


@dataclass
class NarrowConfig:
    """Search-space narrowing before training (MatchNAS-dagger, docs/method.md)."""

    proxy: str | None = None  # a zero-cost proxy name; None: train on the whole space
    candidates: int = 1000  # K configs sampled and scored on the converted supernet
    keep: float = 0.25  # fraction kept within each FLOPs bin
    bins: int = 5  # FLOPs bins (quantiles), so every budget keeps candidates


@dataclass
class SplitConfig:
    """Few-shot splitting by gradient matching (GM-NAS, docs/method.md): after ``at * train.steps``
    one-shot steps, ``edges`` edges are split into sub-supernets that train for the remaining steps."""

    method: str = "none"  # none | gm (gradient matching) | random (the paper's control)
    edges: int = 1  # the splitting budget: how many edges are split
    dimension: str = "expand"  # kernel | expand: which choice of a stage's first block is an edge
    groups: int = 2  # groups per split edge (sub-supernets: groups ** edges)
    at: float = 0.5  # fraction of the steps trained one-shot before the split
    batches: int = 4  # batches each choice's gradient is averaged over


@dataclass
class Experiment:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    narrow: NarrowConfig = field(default_factory=NarrowConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        check_ranges(self)
        t = self.train
        choices = {"loss": ("sup", "fm", "kd", "full"), "pseudo_labels": ("maxnet", "self"), "precision": ("fp32", "bf16")}
        for key, allowed in choices.items():
            if getattr(t, key) not in allowed:
                raise MatchnasError(f"train.{key} must be one of {', '.join(allowed)}, got {getattr(t, key)!r}")
        _validate_levers(t)
        sp = self.split
        if sp.method not in ("none", "gm", "random"):
            raise MatchnasError(f"split.method must be one of none, gm, random, got {sp.method!r}")
        if sp.method != "none" and t.ema_teacher > 0:
            raise MatchnasError("train.ema_teacher needs split.method=none: the split replaces the weights it averages")
        if sp.dimension not in ("kernel", "expand"):
            raise MatchnasError(f"split.dimension must be kernel or expand, got {sp.dimension!r}")
        if sp.method != "none" and t.single is not None:
            raise MatchnasError("split.method applies to supernets; a train.single run has nothing to split")
        if self.data.labels_per_class is not None and self.data.label_fraction is not None:
            raise MatchnasError("set at most one of data.labels_per_class and data.label_fraction")

    @property
    def resolved(self) -> bool:
        """Whether every automatic setting has its value (see :mod:`matchnas.defaults`)."""
        d = self.data
        return (None not in (d.image_size, d.val_per_class, self.model.space, self.train.steps)
                and (d.labels_per_class, d.label_fraction) != (None, None))


# The valid range of every numeric setting, checked before anything runs. "[a, b]" includes its
# ends, "(a, b)" excludes them, "inf" is unbounded. A new numeric field needs a line here (a test
# checks that every int/float field has one). The seed bound keeps (seed, step) seeds in int64.
RANGES: dict[str, str] = {
    "data.image_size": "[1, inf)",
    "data.labels_per_class": "[1, inf)",
    "data.label_fraction": "(0, 1]",
    "data.val_per_class": "[0, inf)",
    "data.max_unlabeled": "[0, inf)",
    "model.dropout": "[0, 1)",
    "train.steps": "[1, inf)",
    "train.batch_size": "[1, inf)",
    "train.unlabeled_ratio": "[1, inf)",
    "train.lr": "(0, inf)",
    "train.momentum": "[0, 1)",
    "train.weight_decay": "[0, inf)",
    "train.warmup_steps": "[0, inf)",
    "train.n_random": "[0, inf)",
    "train.tau": "[0, 1]",
    "train.label_smoothing": "[0, 1)",
    "train.lambda_u": "[0, inf)",
    "train.lambda_kd": "[0, inf)",
    "train.seed": "[0, 4294967295]",
    "train.checkpoint_every": "[1, inf)",
    "train.recalibration_images": "[1, inf)",
    "train.teacher_warmup": "[0, 1]",
    "train.student_ramp": "[0, 1]",
    "train.student_sup_weight": "[0, inf)",
    "train.body_lr_scale": "[0, inf)",
    "train.final_lr": "[0, 1]",
    "train.ema_teacher": "[0, 1)",
    "narrow.candidates": "[1, inf)",
    "narrow.keep": "(0, 1]",
    "narrow.bins": "[1, inf)",
    "split.edges": "[1, inf)",
    "split.groups": "[2, inf)",
    "split.at": "(0, 1)",
    "split.batches": "[1, inf)",
}


def _in_range(value: float, interval: str) -> bool:
    low, high = (float(x) for x in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return above and below  # NaN is in no range


def _describe(interval: str) -> str:
    low, high = (x.strip() for x in interval[1:-1].split(","))
    if high == "inf":
        return f"at least {low}" if interval[0] == "[" else f"greater than {low}"
    return f"in {interval}"


def check_ranges(experiment: Experiment) -> None:
    """Refuse the first setting outside its range in :data:`RANGES` (None means "not set")."""
    for key, interval in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(experiment, section), name)
        if value is None:
            continue
        if not math.isfinite(value):
            raise MatchnasError(f"{key} must be a finite number, got {value}")
        if not _in_range(value, interval):
            raise MatchnasError(f"{key} must be {_describe(interval)}, got {value}")


_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _validate_levers(t: TrainConfig) -> None:
    """The training levers beyond their ranges (one-line errors that name the key)."""
    if t.distill_view not in ("weak", "strong"):
        raise MatchnasError(f"train.distill_view must be one of weak, strong, got {t.distill_view!r}")
    if t.teacher_warmup + t.student_ramp > 1.0:
        raise MatchnasError(f"train.teacher_warmup + train.student_ramp must be at most 1, got "
                            f"{t.teacher_warmup} + {t.student_ramp}")


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Check/convert a YAML value against a dataclass field annotation (str, int, float, bool,
    and ``X | None``)."""
    options = [a.strip() for a in str(annotation).split("|")]
    if value is None:
        if "None" in options:
            return None
        raise MatchnasError(f"{key} cannot be null")
    for option in options:
        if option == "bool" and isinstance(value, bool):
            return value
        if option == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option == "float" and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 5e-4 (no dot) as a string
        if option == "str" and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise MatchnasError(f"{key} expects {annotation}, got {value!r}")


def _apply(target: Any, values: dict[str, Any], where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in values.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise MatchnasError(f"unknown config key '{name}'{hint}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise MatchnasError(f"{name} must be a mapping")
            _apply(current, value, name)
        else:
            setattr(target, key, _convert(value, fields[key].type, name))


def load_experiment(path: str | Path | None = None, overrides: list[str] = ()) -> Experiment:
    """Defaults, then the YAML file (if any), then ``section.key=value`` overrides (YAML values)."""
    experiment = Experiment()
    if path is not None:
        data = read_yaml(path, "experiment file") or {}
        if not isinstance(data, dict):
            raise MatchnasError(f"{path}: expected a mapping at the top level")
        _apply(experiment, data, "")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise MatchnasError(f"--set expects key=value, got '{item}'")
        nested: dict[str, Any] = {}
        cursor = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = yaml.safe_load(text) if text.strip() else None
        _apply(experiment, nested, "")
    experiment.validate()
    return experiment


def experiment_from_dict(data: dict[str, Any], source: str = "experiment") -> Experiment:
    if not isinstance(data, dict):
        raise MatchnasError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    experiment = Experiment()
    _apply(experiment, data, "")
    experiment.validate()
    return experiment
