"""Data for matchnas: sources, seeded label splits, batch streams and weak/strong views.

Typical use::

    source = load_source("fashion-mnist")
    split = make_split(source, seed=0, n_per_class=40, n_val_per_class=10)
    save_split(split, run_dir / "split.json")
    sets = apply_split(source, split)
    labeled = BatchStream(len(sets.labeled), 32, seed=0, stream=0)
    unlabeled = BatchStream(len(sets.unlabeled), 7 * 32, seed=0, stream=1)
    idx = labeled.batch(step)
    gen = generator_for(0, step, rank)
    x = normalisation(weak(sets.labeled.images[idx], gen, flip=source.allow_flip), size=32)

where ``normalisation`` is the backbone's (``get_backbone(name).normalisation``) or the run's.
"""

from matchnas.data.augment import (
    TFLITE_MEAN,
    TFLITE_STD,
    cutout,
    resize,
    strong,
    to_model_input,
    weak,
)
from matchnas.data.cifar import load_cifar
from matchnas.data.datasets import SOURCE_NAMES, load_digits, load_source
from matchnas.data.folders import load_folder
from matchnas.data.normalise import LITE_NORMALISATION, Normalisation
from matchnas.data.idx import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    cache_dir,
    fashion_mnist_files,
    load_fashion_mnist,
    read_idx,
)
from matchnas.data.randaugment import (
    OP_NAMES,
    RandAugmentPlan,
    apply_op,
    apply_plan,
    draw_plan,
    randaugment,
)
from matchnas.data.sampling import BatchStream, derive_seed, generator_for
from matchnas.data.source import DataSource, ImageSet
from matchnas.data.split import Split, SplitSets, apply_split, load_split, make_split, save_split

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "LITE_NORMALISATION",
    "FASHION_MNIST_CLASSES",
    "OP_NAMES",
    "SOURCE_NAMES",
    "TFLITE_MEAN",
    "TFLITE_STD",
    "BatchStream",
    "DataSource",
    "ImageSet",
    "Normalisation",
    "RandAugmentPlan",
    "Split",
    "SplitSets",
    "apply_op",
    "apply_plan",
    "apply_split",
    "cache_dir",
    "cutout",
    "derive_seed",
    "draw_plan",
    "fashion_mnist_files",
    "generator_for",
    "load_cifar",
    "load_digits",
    "load_fashion_mnist",
    "load_folder",
    "load_source",
    "load_split",
    "make_split",
    "randaugment",
    "read_idx",
    "resize",
    "save_split",
    "strong",
    "to_model_input",
    "weak",
]
