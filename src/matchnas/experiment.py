"""Experiment configuration: typed dataclasses with defaults in code, one YAML file per
experiment, and ``--set section.key=value`` overrides. Unknown keys and ill-typed values are
errors that name the key.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from matchnas.errors import MatchnasError


@dataclass
class DataConfig:
    source: str = "digits"  # digits | fashion-mnist | cifar10 | cifar100 | a folder of images
    data_dir: str | None = None  # where the source's files are (default: the source's usual place)
    image_size: int = 32  # images are stored at this size; subnets resize to their resolution
    labels_per_class: int | None = 10
    label_fraction: float | None = None  # instead of labels_per_class
    val_per_class: int = 0  # labelled validation images per class, carved from the rest
    max_unlabeled: int | None = None  # cap on the unlabelled pool (seeded)
    flip: bool | None = None  # horizontal flips in the weak view; None: the source's default


@dataclass
class ModelConfig:
    backbone: str = "efficientnet-lite0"
    space: str | None = None  # a shipped space name or a YAML file; None: the backbone's
    dropout: float = 0.2  # before the classifier


@dataclass
class TrainConfig:
    steps: int = 500
    batch_size: int = 32  # labelled images per step (B)
    unlabeled_ratio: int = 1  # mu: unlabelled images per step = mu * B
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-5  # not on biases, BN or kernel transforms
    warmup_steps: int = 25
    n_random: int = 2  # random subnets per step besides the max and min (sandwich rule)
    tau: float = 0.95  # pseudo-label confidence threshold
    label_smoothing: float = 0.0  # eps; 0 by default: 0.1 starves tau (METHOD.md, Pitfalls)
    lambda_u: float = 1.0
    lambda_kd: float = 1.0
    loss: str = "full"  # sup | fm | kd | full
    pseudo_labels: str = "maxnet"  # maxnet | self
    single: str | None = None  # None: the supernet; "max", "min" or a config JSON: one fixed subnet
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps (bf16 autocast on CUDA)
    sync_bn: bool = False  # under torchrun: batch statistics over all ranks
    checkpoint_every: int = 50
    recalibration_images: int = 512  # weak-view training images used to re-estimate BN
    # Training levers of issue 13 (train/levers.py). Every default reproduces the recipe before
    # the levers existed; a default changes only after a measurement says so (docs/benchmarks.md).
    # The teacher first (OFA's progressive shrinking; DepS, arXiv 2407.06167): for the first
    # ``teacher_warmup`` fraction of the steps only the maxnet trains (labels + FixMatch; students
    # are not even forwarded), then the students' loss weight ramps linearly from 0 to 1 over the
    # next ``student_ramp`` fraction of the steps.
    teacher_warmup: float = 0.0
    student_ramp: float = 0.0
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


@dataclass
class NarrowConfig:
    """Search-space narrowing before training (MatchNAS-dagger, METHOD.md)."""

    proxy: str | None = None  # a zero-cost proxy name; None: train on the whole space
    candidates: int = 1000  # K configs sampled and scored on the converted supernet
    keep: float = 0.25  # fraction kept within each FLOPs bin
    bins: int = 5  # FLOPs bins (quantiles), so every budget keeps candidates


@dataclass
class SplitConfig:
    """Few-shot splitting by gradient matching (GM-NAS, METHOD.md): after ``at * train.steps``
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
        t = self.train
        choices = {"loss": ("sup", "fm", "kd", "full"), "pseudo_labels": ("maxnet", "self")}
        for key, allowed in choices.items():
            if getattr(t, key) not in allowed:
                raise MatchnasError(f"train.{key} must be one of {', '.join(allowed)}, got {getattr(t, key)!r}")
        positive = {"train.steps": t.steps, "train.batch_size": t.batch_size, "data.image_size": self.data.image_size}
        for key, value in positive.items():
            if value < 1:
                raise MatchnasError(f"{key} must be at least 1, got {value}")
        if not 0.0 <= t.tau <= 1.0:
            raise MatchnasError(f"train.tau must be in [0, 1], got {t.tau}")
        _validate_levers(t)
        n = self.narrow
        if not (0.0 < n.keep <= 1.0) or n.candidates < 1 or n.bins < 1:
            raise MatchnasError("narrow.keep must be in (0, 1], narrow.candidates and narrow.bins at least 1")
        sp = self.split
        if sp.method not in ("none", "gm", "random"):
            raise MatchnasError(f"split.method must be one of none, gm, random, got {sp.method!r}")
        if sp.dimension not in ("kernel", "expand"):
            raise MatchnasError(f"split.dimension must be kernel or expand, got {sp.dimension!r}")
        if sp.edges < 1 or sp.groups < 2 or sp.batches < 1 or not 0.0 < sp.at < 1.0:
            raise MatchnasError("split.edges and split.batches must be at least 1, split.groups at least 2, split.at in (0, 1)")
        if sp.method != "none" and t.single is not None:
            raise MatchnasError("split.method applies to supernets; a train.single run has nothing to split")
        if (self.data.labels_per_class is None) == (self.data.label_fraction is None):
            raise MatchnasError("set exactly one of data.labels_per_class and data.label_fraction")


def _validate_levers(t: TrainConfig) -> None:
    """The training levers of issue 13 (one-line errors that name the key)."""
    if t.distill_view not in ("weak", "strong"):
        raise MatchnasError(f"train.distill_view must be one of weak, strong, got {t.distill_view!r}")
    unit = {"train.teacher_warmup": t.teacher_warmup, "train.student_ramp": t.student_ramp, "train.final_lr": t.final_lr}
    for key, value in unit.items():
        if not 0.0 <= value <= 1.0:
            raise MatchnasError(f"{key} must be in [0, 1], got {value}")
    if t.teacher_warmup + t.student_ramp > 1.0:
        raise MatchnasError(f"train.teacher_warmup + train.student_ramp must be at most 1, got "
                            f"{t.teacher_warmup} + {t.student_ramp}")
    for key, value in {"train.student_sup_weight": t.student_sup_weight, "train.body_lr_scale": t.body_lr_scale}.items():
        if value < 0.0:
            raise MatchnasError(f"{key} must be at least 0, got {value}")


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
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise MatchnasError(f"experiment file not found: {path}") from None
        except yaml.YAMLError as err:
            raise MatchnasError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
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


def experiment_from_dict(data: dict[str, Any]) -> Experiment:
    experiment = Experiment()
    _apply(experiment, data, "")
    experiment.validate()
    return experiment
