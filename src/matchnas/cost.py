"""Cost models: pure functions of a subnet config (they never build or run a network).

All three read one list of layers, :func:`layers`, which mirrors what
:meth:`matchnas.nn.Supernet.extract` builds (tested against the extracted module).

Conventions:
- **FLOPs** count the convolutions and the classifier's matrix multiply, **2 FLOPs per
  multiply-add**, for one image; batch norm, activations, residual additions, pooling, biases and
  the squeeze-excite gate's multiplication are not counted (its two 1x1 convs are). This is exactly what ``torch.utils.flop_counter.
  FlopCounterMode`` counts for the forward pass of the extracted module.
- **Parameters** are the extracted module's parameters: conv weights, BN scale and shift (2 per
  channel), classifier weight and bias. BN running statistics and the supernet's kernel
  transforms (folded into the extracted kernels) are not parameters.
- **Peak memory** (bytes) is the largest total size of the activations alive at once when the
  layers run one after another: a layer's input and output, plus the block input held for the
  residual connection. A layer is conv + BN + ReLU6 (BN folded and the activation fused, as
  deployed); the residual addition is done in place; pooling and the classifier are layers too.
  A squeeze-excite (MobileNetV3) is two layers on the pooled ``1 x 1`` map whose input block
  tensor stays alive for the gate's multiplication (done in place).
  Weights are not included. ``dtype_bytes`` is 4 for float32.
"""

from __future__ import annotations

from dataclasses import dataclass

from matchnas.nn.blocks import hidden_channels
from matchnas.nn.ops import se_channels
from matchnas.space import SearchSpace, SubnetConfig


@dataclass(frozen=True)
class Layer:
    """One layer of a subnet. Sizes are per image; ``size_in``/``size_out`` are square sides in
    pixels (1 for the classifier); ``held`` counts activations kept alive for a residual."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    groups: int
    size_in: int
    size_out: int
    batch_norm: bool
    held: int = 0

    @property
    def macs(self) -> int:
        return self.out_channels * self.size_out**2 * (self.in_channels // self.groups) * self.kernel**2

    @property
    def params(self) -> int:
        weights = self.out_channels * (self.in_channels // self.groups) * self.kernel**2
        return weights + (2 if self.batch_norm else 1) * self.out_channels  # BN scale+shift / bias

    @property
    def live_activations(self) -> int:
        return self.in_channels * self.size_in**2 + self.out_channels * self.size_out**2 + self.held


def _out_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # = ceil(size / stride): odd kernel k, padding k // 2 or TensorFlow "same"


def layers(space: SearchSpace, config: SubnetConfig, num_classes: int, in_chans: int = 3) -> list[Layer]:
    """The layers of subnet ``config``, in execution order."""
    space.validate(config)
    size = config.resolution
    out: list[Layer] = []

    def add(name, cin, cout, k, stride, groups, held=0, bn=True):  # bn=False: a conv with a bias
        nonlocal size
        new = _out_size(size, stride)
        out.append(Layer(name, cin, cout, k, stride, groups, size, new, bn, held))
        size = new

    add("stem", in_chans, space.stem_width, 3, 2, 1)
    width = space.stem_width
    for s, (stage_space, stage) in enumerate(zip(space.stages, config.stages)):
        for b in range(stage.depth):
            name = f"stages.{s}.{b}"
            held = width * size**2 if space.residual(s, b) else 0  # residual: the block input stays alive
            hidden = width
            if max(stage_space.expands[b]) != 1:
                hidden = hidden_channels(width, stage.expand[b])
                add(f"{name}.conv_pw", width, hidden, 1, 1, 1)  # its input is the held tensor itself
            add(f"{name}.conv_dw", hidden, hidden, stage.kernel[b], stage_space.stride if b == 0 else 1, hidden, held)
            if stage_space.se is not None:
                reduced, excited = se_channels(hidden, stage_space.se), held + hidden * size**2
                out.append(Layer(f"{name}.se.conv_reduce", hidden, reduced, 1, 1, 1, 1, 1, False, excited))
                out.append(Layer(f"{name}.se.conv_expand", reduced, hidden, 1, 1, 1, 1, 1, False, excited))
            add(f"{name}.conv_pwl", hidden, stage.width, 1, 1, 1, held)
            width = stage.width
    add("head", width, space.head_width, 1, 1, 1)
    out.append(Layer("pool", space.head_width, space.head_width, size, 1, space.head_width, size, 1, False))
    if space.head == "mbv3":
        out.append(Layer("head_features", space.head_width, space.feature_width, 1, 1, 1, 1, 1, False))
    out.append(Layer("classifier", space.feature_width or space.head_width, num_classes, 1, 1, 1, 1, 1, False))
    return out


def _conv_layers(all_layers: list[Layer]) -> list[Layer]:
    return [layer for layer in all_layers if layer.name != "pool"]


def flops(space: SearchSpace, config: SubnetConfig, num_classes: int, in_chans: int = 3) -> int:
    """Forward FLOPs for one image (2 per multiply-add; see the module docstring)."""
    return 2 * sum(layer.macs for layer in _conv_layers(layers(space, config, num_classes, in_chans)))


def params(space: SearchSpace, config: SubnetConfig, num_classes: int, in_chans: int = 3) -> int:
    """Number of parameters of the extracted subnet."""
    return sum(layer.params for layer in _conv_layers(layers(space, config, num_classes, in_chans)))


def peak_memory(
    space: SearchSpace,
    config: SubnetConfig,
    num_classes: int,
    in_chans: int = 3,
    batch_size: int = 1,
    dtype_bytes: int = 4,
) -> int:
    """Peak activation memory in bytes for ``batch_size`` images (see the module docstring)."""
    peak = max(layer.live_activations for layer in layers(space, config, num_classes, in_chans))
    return peak * batch_size * dtype_bytes


TFLITE_INT8_CHANNEL_BYTES = 2 * (4 + 8)  # weight and bias: float32 scale + int64 zero point


def flash_bytes(space: SearchSpace, config: SubnetConfig, num_classes: int, in_chans: int = 3,
                dtype_bytes: int = 4) -> int:
    """Bytes of the weights a deployed file stores (flash on a microcontroller): every conv and
    classifier weight at ``dtype_bytes`` (1 for int8), BN folded into a float32/int32 bias of 4
    bytes per output channel. With int8, the per-channel quantization parameters as a ``.tflite``
    (what TFLite Micro runs) stores them: a float32 scale and an int64 zero point for the weights
    and again for the bias, 24 more bytes per output channel (ONNX's int8 files store less). The
    graph, its metadata and the runtime's code are not included: measured on a 31 MFLOPs int8
    ``.tflite``, they were 4.5% of the file."""
    total = 0
    for layer in _conv_layers(layers(space, config, num_classes, in_chans)):
        weights = layer.out_channels * (layer.in_channels // layer.groups) * layer.kernel**2
        total += weights * dtype_bytes + layer.out_channels * (4 + (TFLITE_INT8_CHANNEL_BYTES if dtype_bytes == 1 else 0))
    return total


COST_FUNCTIONS = {"flops": flops, "params": params, "memory": peak_memory, "flash": flash_bytes}
