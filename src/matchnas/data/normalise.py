"""Input normalisation as one value a run carries: ``(x - mean) / std`` per channel on 0..255.

A backbone owns it (:mod:`matchnas.backbones`), a checkpoint records it, and every reader of a
run (training batches, BN recalibration, evaluation, proxies, int8 calibration, export and the
bundle manifest) takes it from :attr:`matchnas.run.RunData.normalisation`, so a MobileNetV3 run
never meets EfficientNet-Lite's ``(x - 127) / 128`` by accident.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from matchnas.data.augment import TFLITE_MEAN, TFLITE_STD, to_model_input
from matchnas.errors import MatchnasError


@dataclass(frozen=True)
class Normalisation:
    """Per-channel (R, G, B) ``mean`` and ``std`` on the 0..255 pixel scale."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or not all(s > 0 for s in self.std):
            raise MatchnasError(f"normalisation needs 3 means and 3 positive stds, got {self.mean} / {self.std}")

    def __call__(self, images: torch.Tensor, size: int | None = None, channels: int = 3) -> torch.Tensor:
        """uint8 ``N x C x H x W`` -> float32 model input (see :func:`~matchnas.data.to_model_input`)."""
        mean, std = self.manifest_values()
        return to_model_input(images, size=size, channels=channels, mean=mean, std=std)

    def manifest_values(self) -> tuple[float | list[float], float | list[float]]:
        """``(mean, std)``: scalars when every channel is the same (EfficientNet-Lite's 127/128, as
        bundles always said, and the scalar arithmetic training always did), else 3-lists."""
        if len(set(self.mean)) == 1 and len(set(self.std)) == 1:
            return float(self.mean[0]), float(self.std[0])
        return [float(v) for v in self.mean], [float(v) for v in self.std]

    def to_record(self) -> dict[str, list[float]]:
        """What a checkpoint records."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_record(cls, record: dict | None) -> Normalisation:
        """A checkpoint's (or manifest's) record; None (a run made before it was recorded) is
        EfficientNet-Lite's: a checkpoint without the record is an EfficientNet-Lite run, the one
        backbone whose runs did not record it. A scalar stands for all channels."""
        if record is None:
            return LITE_NORMALISATION

        def three(value) -> tuple[float, ...]:
            return (float(value),) * 3 if isinstance(value, (int, float)) else tuple(float(v) for v in value)

        try:
            return cls(three(record["mean"]), three(record["std"]))
        except (KeyError, TypeError, ValueError):
            raise MatchnasError(f"bad normalisation record {record!r}: needs 'mean' and 'std'") from None


LITE_NORMALISATION = Normalisation((TFLITE_MEAN,) * 3, (TFLITE_STD,) * 3)  # EfficientNet-Lite's (x - 127) / 128
