"""A trained run as one object: ``run = open_run("runs/x")``.

Reading a run needs no training code and no pre-trained weights: the supernet is rebuilt from
what the checkpoint recorded (its space, the number of classes, the backbone's BN epsilon, the
few-shot plan) and gets the checkpoint's weights, so a shipped space file edited since never
changes a trained model's function. :class:`Run` then offers what every reader of a run needs:

- ``run.subnet(config)``: the extracted subnet, a plain ``nn.Module`` in eval mode with BN
  re-calibrated (docs/method.md, "BN recalibration"); the subnet for a budget is search's job
  (:func:`matchnas.search.pick.subnet_for_budget`), one layer up;
- ``run.top1(config, split)``: its top-1 on the test or validation split, the one implementation of
  "recalibrate BN, then measure top-1" (docs/method.md, "Evaluation protocol");
- ``run.selection_index`` (TOFA's ``I(a)``), ``run.pool`` (the narrowed pool, or None) and
  ``run.fewshot_plan`` (the few-shot split, or None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from matchnas import devices
from matchnas.checkpoint import FINAL, LATEST, load_checkpoint
from matchnas.convert import get_backbone
from matchnas.data import ImageSet, Normalisation, Split, SplitSets, apply_split, load_source, load_split, make_split, resize
from matchnas.data.source import DataSource
from matchnas.errors import MatchnasError
from matchnas.evaluate import accuracy, calibrated_subnet
from matchnas.experiment import Experiment, experiment_from_dict
from matchnas.io import read_yaml
from matchnas.nn import StaticNet, Supernet
from matchnas.nn.fewshot import SplitPlan, SplitSupernet
from matchnas.pool import load_pool
from matchnas.selection_index import SelectionIndex
from matchnas.space import SearchSpace, SubnetConfig
from matchnas.space_file import space_from_dict

SPLITS = ("held_out", "test", "val")


# -- the data of a run ----------------------------------------------------------------------------
@dataclass
class RunData:
    """The data of a run, images stored as uint8 at ``image_size``, and the input normalisation
    that turns them into model input: the one place training, evaluation, proxies, int8
    calibration and export take it from (the checkpoint's record once a run has one)."""

    source: DataSource
    split: Split
    sets: SplitSets
    unlabeled_truth: torch.Tensor | None
    flip: bool
    normalisation: Normalisation

    def model_input(self, images: torch.Tensor, size: int | None = None, channels: int = 3) -> torch.Tensor:
        """uint8 images -> this run's float32 model input (see :class:`~matchnas.data.Normalisation`)."""
        return self.normalisation(images, size=size, channels=channels)

    @property
    def num_classes(self) -> int:
        return len(self.source.train.classes)

    @property
    def recalibration_pool(self) -> torch.Tensor:
        """The training images BN statistics are re-estimated on (labelled + unlabelled, uint8)."""
        return torch.cat([self.sets.labeled.images, self.sets.unlabeled.images])


def prepare_data(experiment: Experiment, run_dir: Path, reuse_split: bool = True,
                 normalisation: Normalisation | None = None) -> RunData:
    """Load the source, draw the split (or reload the run's ``split.json`` when ``reuse_split``),
    and store images at ``image_size``. ``normalisation``: a checkpoint's record (see
    :meth:`~matchnas.data.Normalisation.from_record`); None: the backbone's. Writes nothing: a new
    run saves ``data.split`` once everything has loaded."""
    d = experiment.data
    source = load_source(d.source, d.data_dir, d.image_size)
    if len(source.classes) < 2:  # one class "trains" to 100% top-1 and means nothing
        raise MatchnasError(f"data set {source.name!r} has one class {list(source.classes)}: a classifier needs at least 2")
    split_path = run_dir / "split.json"
    if reuse_split and split_path.exists():
        split = load_split(split_path)
    else:
        split = make_split(
            source,
            seed=experiment.train.seed,
            n_per_class=d.labels_per_class,
            fraction=d.label_fraction,
            n_val_per_class=d.val_per_class,
            max_unlabeled=d.max_unlabeled,
        )
    source = _resized(source, d.image_size)
    sets = apply_split(source, split)
    truth = source.train_labels[list(split.unlabeled)] if not split.unlabeled_extra else None
    flip = source.allow_flip if d.flip is None else d.flip
    if normalisation is None:
        normalisation = get_backbone(experiment.model.backbone).normalisation
    return RunData(source, split, sets, truth, flip, normalisation)


def _resized(source: DataSource, size: int) -> DataSource:
    def fix(images):
        if images is None or images.images.shape[-1] == size:
            return images
        return type(images)(resize(images.images, size), images.labels, images.classes)

    return DataSource(source.name, fix(source.train), fix(source.test), fix(source.unlabeled), source.allow_flip)


def held_out_split(data: RunData) -> str | None:
    """Which split a run is evaluated on, the one place that chooses it: ``"test"`` when the data
    set has test images, else ``"val"`` when validation images were held out, else None."""
    if data.source.test is not None and len(data.source.test):
        return "test"
    if data.sets.val is not None and len(data.sets.val):
        return "val"
    return None


def held_out(data: RunData) -> ImageSet:
    """The images a run is evaluated on (:func:`held_out_split`)."""
    split = held_out_split(data)
    if split is None:
        raise MatchnasError(f"data set {data.source.name!r} has no test split to evaluate on: "
                            "add a test/ folder or hold out validation images with data.val_per_class=N")
    return data.source.test if split == "test" else data.sets.val


def top1(supernet: Supernet, config: SubnetConfig, data: RunData, experiment: Experiment,
         images: ImageSet | None = None) -> float:
    """Top-1 (fraction) of ``config`` after BN recalibration on ``images`` (default: the held-out
    split): the evaluation protocol every command and the training loop's final eval share."""
    t = experiment.train
    net = calibrated_subnet(supernet, config, data.recalibration_pool, t.recalibration_images, t.seed, data.flip,
                            normalisation=data.normalisation)
    return accuracy(net, held_out(data) if images is None else images, config.resolution,
                    normalisation=data.normalisation)


# -- the supernet of a run ------------------------------------------------------------------------
def rebuild_supernet(experiment: Experiment, num_classes: int, checkpoint: dict) -> Supernet:
    """The supernet of a run, rebuilt from the space its ``checkpoint`` recorded (the caller
    loads the weights): a shipped space file edited since, or a convention the run predates
    (``padding``: runs made before it was recorded pad ``k // 2``), never changes its function."""
    if not isinstance(checkpoint.get("space"), dict):
        raise MatchnasError("the checkpoint records no search space")
    space = space_from_dict(checkpoint["space"], source="the checkpoint's space")
    supernet = Supernet(space, num_classes, bn_eps=get_backbone(experiment.model.backbone).bn_eps)
    supernet.dropout.p = experiment.model.dropout
    return supernet


def read_experiment(run_dir: str | Path) -> Experiment:
    """The resolved experiment a run was started with."""
    path = Path(run_dir) / "experiment.yaml"
    if not path.exists():
        raise MatchnasError(f"{run_dir} is not a run directory (no experiment.yaml)")
    return experiment_from_dict(read_yaml(path, "the run's experiment (YAML)"), str(path))


def load_run(run_dir: str | Path, which: str = FINAL) -> tuple[Experiment, Supernet, RunData, dict]:
    """The experiment, trained supernet, data and checkpoint state of a finished (or partial) run."""
    run_dir = Path(run_dir)
    if not (run_dir / "experiment.yaml").is_file():
        raise MatchnasError(f"{run_dir} is not a run directory (no experiment.yaml)")
    path = run_dir / which if (run_dir / which).exists() else run_dir / LATEST
    if not path.exists():
        raise MatchnasError(f"{run_dir} has no checkpoint yet: continue it with `matchnas train --resume {run_dir}`")
    state = load_checkpoint(path)
    experiment = experiment_from_dict(state["experiment"], f"{path}: experiment")
    # a run made before normalisation was recorded is EfficientNet-Lite's (from_record(None))
    data = prepare_data(experiment, run_dir, normalisation=Normalisation.from_record(state.get("normalisation")))
    supernet = rebuild_supernet(experiment, data.num_classes, state)
    if state.get("split"):
        supernet = SplitSupernet.from_parent(supernet, SplitPlan.from_dict(state["split"]))
    try:
        supernet.load_state_dict(state["model"])
    except RuntimeError as err:
        raise MatchnasError(f"{path}: its weights do not fit the run's supernet ({str(err).splitlines()[0]})") from None
    return experiment, supernet, data, state


# -- the run as one object ------------------------------------------------------------------------
@dataclass
class Run:
    """A trained run: its experiment, supernet (eval mode), data and checkpoint state."""

    dir: Path
    experiment: Experiment
    supernet: Supernet
    data: RunData
    state: dict[str, Any]
    _top1: dict[tuple[SubnetConfig, str], float] = field(default_factory=dict, repr=False)

    @property
    def space(self) -> SearchSpace:
        return self.supernet.space

    @property
    def normalisation(self) -> Normalisation:
        """The input normalisation the run trained with (a subnet's input: ``(x - mean) / std``)."""
        return self.data.normalisation

    @property
    def classes(self) -> list[str]:
        return list(self.data.source.train.classes)

    @cached_property
    def selection_index(self) -> SelectionIndex:
        """TOFA's selection index ``I(a)`` as training left it."""
        return SelectionIndex.from_json(self.state["selection_index"])

    @cached_property
    def pool(self) -> tuple[SubnetConfig, ...] | None:
        """The narrowed pool of configs (``pool.json``), or None when the run trained on the space."""
        return load_pool(self.dir, self.space)

    @property
    def fewshot_plan(self) -> SplitPlan | None:
        """The few-shot split plan (:class:`~matchnas.nn.fewshot.SplitPlan`), or None."""
        return getattr(self.supernet, "plan", None)

    @property
    def held_out_split(self) -> str | None:
        """``"test"`` or ``"val"``: the split ``held_out`` means for this run (None: neither)."""
        return held_out_split(self.data)

    def images(self, split: str = "held_out") -> ImageSet:
        """``test``, ``val``, or ``held_out`` (the test split, else the validation split)."""
        if split not in SPLITS:
            raise MatchnasError(f"unknown split '{split}': choose from {', '.join(SPLITS)}")
        if split == "held_out":
            return held_out(self.data)
        images = self.data.source.test if split == "test" else self.data.sets.val
        if images is None or not len(images):
            raise MatchnasError(f"{self.dir}: the run has no {split} split")
        return images

    def config(self, config: SubnetConfig | str) -> SubnetConfig:
        """A config of the run's space: ``"max"``, ``"min"``, a config, or a config JSON file.
        The pick for a budget is search's (:func:`matchnas.search.pick.config_for_budget`)."""
        if isinstance(config, SubnetConfig):
            self.space.validate(config)
            return config
        if config in ("max", "min"):
            return self.space.max() if config == "max" else self.space.min()
        return self.space.config_from_file(config, "config")

    def subnet(self, config: SubnetConfig | str) -> StaticNet:
        """The extracted subnet (see :meth:`config`) with BN re-calibrated, in eval mode."""
        chosen = self.config(config)
        t = self.experiment.train
        pool = self.data.recalibration_pool
        return calibrated_subnet(self.supernet, chosen, pool, t.recalibration_images, t.seed, self.data.flip,
                                 normalisation=self.data.normalisation).eval()

    def top1(self, config: SubnetConfig, split: str | ImageSet = "held_out") -> float:
        """Top-1 (fraction) of ``config`` after BN recalibration, on a split (cached) or a set."""
        if not isinstance(split, str):
            return top1(self.supernet, config, self.data, self.experiment, split)
        key = (config, split)
        if key not in self._top1:
            self._top1[key] = top1(self.supernet, config, self.data, self.experiment, self.images(split))
        return self._top1[key]


def open_run(run_dir: str | Path, which: str = FINAL, device: str | torch.device = "cpu") -> Run:
    """Open a trained run directory (``matchnas train --out``); ``which`` checkpoint, falling back
    to the latest one of a run that has not finished. The supernet (and so every extracted subnet,
    BN recalibration and top-1) lives on ``device``."""
    experiment, supernet, data, state = load_run(run_dir, which)
    devices.prepare(device)
    return Run(Path(run_dir), experiment, supernet.eval().to(device), data, state)
