"""Darknet's layer types, one class each: the section's keys, how a section is parsed and checked, the output
shape, the arrays the layer reads from a .weights file (in file order) and its forward pass. A new layer type is
one class here, listed in LAYER_TYPES; cfg.py, shapes.py, weights.py and network.py only loop over the layers.

Everything is NHWC float32. The arithmetic follows Darknet (golden README Q3-Q8): batch-norm adds its epsilon to
the standard deviation, max-pools pad Darknet's way, connected layers flatten in C,H,W order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdream.darknet.reading import Reader, Reading, read_float, read_int, read_ints, read_word
from jaxdream.errors import CfgError, OptionError
from jaxdream.ops import conv, dense, max_pool, relu, same_conv

Array = jax.Array
Shape = tuple[int, int, int]  # (height, width, channels)
DARKNET_BN_EPSILON = 1e-6
BATCH_NORM_ARRAYS = ("scale", "mean", "var")


def _softplus_threshold(x: Array) -> Array:
    return jnp.where(x > 20.0, x, jnp.log1p(jnp.exp(jnp.minimum(x, 20.0))))


ACTIVATION_FUNCTIONS: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": lambda x: relu(x, lambda v: v * (v > 0)),
    "leaky": lambda x: jnp.where(x > 0, x, 0.1 * x),
    "logistic": jax.nn.sigmoid,
    "loggy": lambda x: 2.0 * jax.nn.sigmoid(x) - 1.0,
    "tanh": jnp.tanh,
    "elu": lambda x: jnp.where(x >= 0, x, jnp.expm1(x)),
    "selu": lambda x: jnp.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * jnp.expm1(x)),
    "relie": lambda x: jnp.where(x > 0, x, 0.01 * x),
    "ramp": lambda x: x * (x > 0) + 0.1 * x,
    "relu6": lambda x: jnp.clip(x, 0.0, 6.0),
    "mish": lambda x: x * jnp.tanh(_softplus_threshold(x)),
    "swish": lambda x: x * jax.nn.sigmoid(x),
    "hardtan": lambda x: jnp.clip(x, -1.0, 1.0),
    "lhtan": lambda x: jnp.where(x < 0, 0.001 * x, jnp.where(x > 1, 0.001 * (x - 1) + 1, x)),
    "plse": lambda x: jnp.where(x < -4, 0.01 * (x + 4), jnp.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5)),
    "gelu": lambda x: 0.5 * x * (1 + jnp.tanh(0.797885 * x + 0.035677 * x**3)),
    "hard_mish": lambda x: jnp.where(x > 0, x, jnp.where(x > -2, x * x / 2 + x, 0.0)),
}

ACTIVATIONS = tuple(ACTIVATION_FUNCTIONS)


@dataclass(frozen=True)
class Net:
    width: int
    height: int
    channels: int
    line: int = 0


@dataclass(frozen=True)
class Context:
    """What a layer's shape and forward pass may need beyond its own spec."""

    source: str  # the cfg, for messages
    net: Net
    in_shape: Shape  # the shape the layer receives at the [net] size (what parameter shapes depend on)
    precision: str = "f32"


@dataclass(frozen=True)
class Layer:
    """A section after [net]: its Darknet index and the line of its header."""

    index: int
    line: int
    KIND: ClassVar[str] = ""
    KEYS: ClassVar[dict[str, Reader]] = {}
    TRAINING_KEYS: ClassVar[str] = ""  # options Darknet reads for training or augmentation: accepted, not used

    @property
    def kind(self) -> str:
        return self.KIND

    @classmethod
    def parse(cls, reading: Reading, index: int) -> Layer:
        return cls(index, reading.section.line)

    def where(self, source: str) -> str:
        return f"{source}:{self.line}"

    def out_shape(self, context: Context, shapes: Sequence[Shape], incoming: Shape) -> Shape:
        return incoming

    def arrays(self, incoming: Shape) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape in the file) of each array this layer reads from a .weights file, in file order."""
        return []

    def forward(self, x: Array, outputs: Sequence[Array], context: Context) -> Array:
        return x


def _activation(reading: Reading, default: str) -> str:
    return reading.choice("activation", default, ACTIVATIONS)


def _batch_norm(module: nn.Module, y: Array) -> Array:
    """Darknet's inference batch-norm, (y - mean) / (sqrt(var) + 1e-6) * scale + bias; params sit with the layer."""
    n = y.shape[-1]
    ones, zeros = nn.initializers.ones, nn.initializers.zeros
    scale = module.param("scale", ones, (n,)).astype(y.dtype)
    mean = module.param("mean", zeros, (n,)).astype(y.dtype)
    var = module.param("var", ones, (n,)).astype(y.dtype)
    bias = module.param("bias", zeros, (n,)).astype(y.dtype)
    return (y - mean) / (jnp.sqrt(var) + DARKNET_BN_EPSILON) * scale + bias


def _bias_or_norm(module: nn.Module, y: Array, batch_normalize: bool) -> Array:
    if batch_normalize:
        return _batch_norm(module, y)
    return y + module.param("bias", nn.initializers.zeros, (y.shape[-1],)).astype(y.dtype)


def nchw_flat(x: Array) -> Array:
    """Flatten (N, H, W, C) in Darknet's C, H, W order."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


@dataclass(frozen=True)
class Conv(Layer):
    filters: int
    size: int
    stride: int
    pad: int  # effective zero padding on each side
    groups: int
    batch_normalize: bool
    activation: str
    KIND: ClassVar[str] = "convolutional"
    KEYS: ClassVar[dict[str, Reader]] = {
        "filters": read_int, "size": read_int, "stride": read_int, "pad": read_int, "padding": read_int,
        "groups": read_int, "batch_normalize": read_int, "activation": read_word}
    TRAINING_KEYS: ClassVar[str] = (
        "binary xnor bin_output flipped dot stopbackward dontload dontloadscales learning_rate_scale")

    @classmethod
    def parse(cls, reading: Reading, index: int) -> Conv:
        size = reading.positive("size", 1)
        pad = size // 2 if reading.get("pad", 0) else reading.get("padding", 0)
        if pad < 0:
            raise reading.fail(f"padding={pad} must not be negative", reading.line("padding"))
        return cls(index, reading.section.line, filters=reading.positive("filters", 1), size=size,
                   stride=reading.positive("stride", 1), pad=pad, groups=reading.positive("groups", 1),
                   batch_normalize=bool(reading.get("batch_normalize", 0)), activation=_activation(reading, "logistic"))

    def out_shape(self, context: Context, shapes: Sequence[Shape], incoming: Shape) -> Shape:
        h, w, c = incoming
        if c % self.groups or self.filters % self.groups:
            raise CfgError(f"{self.where(context.source)}: groups={self.groups} must divide both the {c} input "
                           f"channels and filters={self.filters}")
        return conv_out(h, self.size, self.stride, self.pad), conv_out(w, self.size, self.stride, self.pad), \
            self.filters

    def arrays(self, incoming: Shape) -> list[tuple[str, tuple[int, ...]]]:
        n = self.filters
        norm = [(name, (n,)) for name in BATCH_NORM_ARRAYS] if self.batch_normalize else []
        return [("bias", (n,)), *norm, ("kernel", (n, incoming[2] // self.groups, self.size, self.size))]

    def forward(self, x: Array, outputs: Sequence[Array], context: Context) -> Array:
        return DarknetConv(self, context.in_shape[2], context.precision, name=f"layer_{self.index}")(x)


@dataclass(frozen=True)
class Connected(Layer):
    output: int
    activation: str
    batch_normalize: bool
    KIND: ClassVar[str] = "connected"
    KEYS: ClassVar[dict[str, Reader]] = {"output": read_int, "activation": read_word, "batch_normalize": read_int}
    TRAINING_KEYS: ClassVar[str] = "dontload dontloadscales learning_rate_scale"

    @classmethod
    def parse(cls, reading: Reading, index: int) -> Connected:
        return cls(index, reading.section.line, output=reading.positive("output", 1),
                   activation=_activation(reading, "logistic"),
                   batch_normalize=bool(reading.get("batch_normalize", 0)))

    def out_shape(self, context: Context, shapes: Sequence[Shape], incoming: Shape) -> Shape:
        return 1, 1, self.output

    def arrays(self, incoming: Shape) -> list[tuple[str, tuple[int, ...]]]:
        n, (h, w, c) = self.output, incoming
        norm = [(name, (n,)) for name in BATCH_NORM_ARRAYS] if self.batch_normalize else []
        return [("bias", (n,)), ("kernel", (n, h * w * c)), *norm]

    def forward(self, x: Array, outputs: Sequence[Array], context: Context) -> Array:
        h, w, c = context.in_shape
        return DarknetConnected(self, h * w * c, context.precision, name=f"layer_{self.index}")(x)


class DarknetConv(nn.Module):
    spec: Conv
    in_channels: int
    precision: str = "f32"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        s = self.spec
        shape = (s.size, s.size, self.in_channels // s.groups, s.filters)
        kernel = self.param("kernel", nn.initializers.he_normal(), shape).astype(x.dtype)
        if s.stride == 1 and s.groups == 1 and s.size % 2 == 1:
            y = same_conv(x, kernel, s.pad, self.precision)
        else:
            y = conv(x, kernel, (s.stride, s.stride), ((s.pad, s.pad), (s.pad, s.pad)), s.groups, self.precision)
        return ACTIVATION_FUNCTIONS[s.activation](_bias_or_norm(self, y, s.batch_normalize))


class DarknetConnected(nn.Module):
    spec: Connected
    in_features: int
    precision: str = "f32"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        s = self.spec
        kernel = self.param("kernel", nn.initializers.he_normal(), (self.in_features, s.output)).astype(x.dtype)
        flat = nchw_flat(x)
        if flat.shape[-1] != self.in_features:
            raise OptionError(
                f"connected layer {s.index} was built for {self.in_features} inputs and got {flat.shape[-1]}: "
                "classifier heads with connected layers only run at the cfg's [net] width and height"
            )
        y = _bias_or_norm(self, dense(flat, kernel, self.precision), s.batch_normalize)
        return ACTIVATION_FUNCTIONS[s.activation](y)[:, None, None, :]


@dataclass(frozen=True)
class MaxPool(Layer):
    size: int
    stride: int
    padding: int  # Darknet's total padding; the window origin is shifted by padding // 2
    KIND: ClassVar[str] = "maxpool"
    KEYS: ClassVar[dict[str, Reader]] = {"size": read_int, "stride": read_int, "padding": read_int}
    TRAINING_KEYS: ClassVar[str] = "maxpool_depth out_channels antialiasing"

    @classmethod
    def parse(cls, reading: Reading, index: int) -> MaxPool:
        stride = reading.positive("stride", 1)
        size = reading.positive("size", stride)
        padding = reading.get("padding", size - 1)
        if padding < 0:
            raise reading.fail(f"padding={padding} must not be negative", reading.line("padding"))
        return cls(index, reading.section.line, size=size, stride=stride, padding=padding)

    def out_shape(self, context: Context, shapes: Sequence[Shape], incoming: Shape) -> Shape:
        return maxpool_out(incoming[0], self), maxpool_out(incoming[1], self), incoming[2]

    def forward(self, x: Array, outputs: Sequence[Array], context: Context) -> Array:
        return maxpool(x, self)


def maxpool_out(size: int, layer: MaxPool) -> int:
    return (size + layer.padding - layer.size) // layer.stride + 1


def maxpool(x: Array, spec: MaxPool) -> Array:
    """Darknet max-pool: out = (w + padding - size) // stride + 1, windows start at -(padding // 2)."""
    lo = spec.padding // 2
    return max_pool(x, (spec.size, spec.size), (spec.stride, spec.stride), [(lo, spec.padding - lo)] * 2)


@dataclass(frozen=True)
class AvgPool(Layer):
    KIND: ClassVar[str] = "avgpool"

    def out_shape(self, context: Context, shapes: Sequence[Shape], incoming: Shape) -> Shape:
        return 1, 1, incoming[2]

    def forward(self, x: Array, outputs: Sequence[Array], context: Context) -> Array:
        return jnp.mean(x, axis=(1, 2), keepdims=True)


@dataclass(frozen=True)
class Softmax(Layer):
    groups: int
    temperature: float
    KIND: ClassVar[str] = "softmax"
    KEYS: ClassVar[dict[str, Reader]] = {"groups": read_int, "temperature": read_float}
    TRAINING_KEYS: ClassVar[str] = "tree spatial noloss"

    @classmethod
    def parse(cls, reading: Reading, index: int) -> Softmax:
        temperature = reading.get("temperature", 1.0)
        if temperature <= 0:
            raise reading.fail(f"temperature={temperature} must be positive", reading.line("temperature"))
        return cls(index, reading.section.line, groups=reading.positive("groups", 1), temperature=temperature)

    def out_shape(self, context: Context, shapes: Sequence[Shape], incoming: Shape) -> Shape:
        h, w, c = incoming
        if (h * w * c) % self.groups:
            raise CfgError(f"{self.where(context.source)}: groups={self.groups} must divide the {h * w * c} inputs "
                           "of the softmax")
        return incoming

    def forward(self, x: Array, outputs: Sequence[Array], context: Context) -> Array:
        flat = nchw_flat(x).reshape(x.shape[0], self.groups, -1)
        probs = jax.nn.softmax(flat / self.temperature, axis=-1)
        n, h, w, c = x.shape
        return probs.reshape(n, c, h, w).transpose(0, 2, 3, 1)


@dataclass(frozen=True)
class Dropout(Layer):
    probability: float
    KIND: ClassVar[str] = "dropout"
    KEYS: ClassVar[dict[str, Reader]] = {"probability": read_float}
    TRAINING_KEYS: ClassVar[str] = "dropblock dropblock_size_rel dropblock_size_abs"

    @classmethod
    def parse(cls, reading: Reading, index: int) -> Dropout:
        probability = reading.get("probability", 0.5)
        if not 0 <= probability < 1:
            raise reading.fail(f"probability={probability} must be in [0, 1)", reading.line("probability"))
        return cls(index, reading.section.line, probability=probability)


@dataclass(frozen=True)
class Route(Layer):
    layers: tuple[int, ...]  # absolute indices
    groups: int
    group_id: int
    KIND: ClassVar[str] = "route"
    KEYS: ClassVar[dict[str, Reader]] = {"layers": read_ints, "groups": read_int, "group_id": read_int}
    TRAINING_KEYS: ClassVar[str] = "stopbackward"

    @classmethod
    def parse(cls, reading: Reading, index: int) -> Route:
        if not reading.has("layers"):
            raise reading.fail("needs layers=..., e.g. layers=-1,-4")
        sources = tuple(reading.layer_index("layers", o, index) for o in reading.get("layers", ()))
        groups = reading.positive("groups", 1)
        group_id = reading.get("group_id", 0)
        if not 0 <= group_id < groups:
            raise reading.fail(f"group_id={group_id} must be in 0 .. {groups - 1}", reading.line("group_id"))
        return cls(index, reading.section.line, layers=sources, groups=groups, group_id=group_id)

    def out_shape(self, context: Context, shapes: Sequence[Shape], incoming: Shape) -> Shape:
        first = shapes[self.layers[0]]
        total = 0
        for source in self.layers:
            sh, sw, sc = shapes[source]
            if (sh, sw) != first[:2]:
                raise CfgError(
                    f"{self.where(context.source)}: route joins layer {self.layers[0]} ({first[0]}x{first[1]}) with "
                    f"layer {source} ({sh}x{sw}); routed layers must have the same height and width")
            if sc % self.groups:
                raise CfgError(f"{self.where(context.source)}: groups={self.groups} must divide the {sc} channels "
                               f"of layer {source}")
            total += sc // self.groups
        return first[0], first[1], total

    def forward(self, x: Array, outputs: Sequence[Array], context: Context) -> Array:
        parts = []
        for source in self.layers:
            y = outputs[source]
            width = y.shape[-1] // self.groups
            parts.append(y[..., self.group_id * width : (self.group_id + 1) * width])
        return jnp.concatenate(parts, axis=-1)


@dataclass(frozen=True)
class Shortcut(Layer):
    source: int  # absolute index of the `from` layer
    activation: str
    alpha: float
    beta: float
    KIND: ClassVar[str] = "shortcut"
    KEYS: ClassVar[dict[str, Reader]] = {"from": read_ints, "activation": read_word, "alpha": read_float,
                                         "beta": read_float}
    TRAINING_KEYS: ClassVar[str] = "weights_type weights_normalization"

    @classmethod
    def parse(cls, reading: Reading, index: int) -> Shortcut:
        offsets = reading.get("from", None)
        if offsets is None or len(offsets) != 1:
            raise reading.fail("needs exactly one from=..., e.g. from=-3", reading.line("from"))
        return cls(index, reading.section.line, source=reading.layer_index("from", offsets[0], index),
                   activation=_activation(reading, "linear"), alpha=reading.get("alpha", 1.0),
                   beta=reading.get("beta", 1.0))

    def out_shape(self, context: Context, shapes: Sequence[Shape], incoming: Shape) -> Shape:
        h, w, _ = incoming
        sh, sw, _ = shapes[self.source]
        ok = (sh >= h and sh % h == 0 and sw % w == 0 and sh // h == sw // w) or \
             (h % sh == 0 and w % sw == 0 and h // sh == w // sw)
        if not ok:
            raise CfgError(
                f"{self.where(context.source)}: shortcut adds layer {self.source} ({sh}x{sw}) to {h}x{w}; the sizes "
                "must be equal or differ by the same whole factor in both directions")
        return incoming

    def forward(self, x: Array, outputs: Sequence[Array], context: Context) -> Array:
        return shortcut(x, outputs[self.source], self)


def shortcut(previous: Array, source: Array, spec: Shortcut) -> Array:
    """out = alpha * previous + beta * source over the shared channels, sampled Darknet's way for unequal sizes."""
    stride = max(source.shape[2] // previous.shape[2], 1)
    sample = max(previous.shape[2] // source.shape[2], 1)
    channels = min(previous.shape[-1], source.shape[-1])
    added = source[:, ::stride, ::stride, :channels]
    rows, cols = min(source.shape[1], previous.shape[1]), min(source.shape[2], previous.shape[2])
    added = added[:, :rows, :cols]
    out = spec.alpha * previous
    out = out.at[:, : rows * sample : sample, : cols * sample : sample, :channels].add(spec.beta * added)
    return ACTIVATION_FUNCTIONS[spec.activation](out)


@dataclass(frozen=True)
class Upsample(Layer):
    stride: int
    scale: float
    KIND: ClassVar[str] = "upsample"
    KEYS: ClassVar[dict[str, Reader]] = {"stride": read_int, "scale": read_float}

    @classmethod
    def parse(cls, reading: Reading, index: int) -> Upsample:
        stride = reading.get("stride", 2)
        if stride < 1:
            raise reading.fail(f"stride={stride} is not supported; use a positive stride", reading.line("stride"))
        return cls(index, reading.section.line, stride=stride, scale=reading.get("scale", 1.0))

    def out_shape(self, context: Context, shapes: Sequence[Shape], incoming: Shape) -> Shape:
        return incoming[0] * self.stride, incoming[1] * self.stride, incoming[2]

    def forward(self, x: Array, outputs: Sequence[Array], context: Context) -> Array:
        return self.scale * jnp.repeat(jnp.repeat(x, self.stride, axis=1), self.stride, axis=2)


@dataclass(frozen=True)
class Crop(Layer):
    crop_height: int
    crop_width: int
    noadjust: bool
    KIND: ClassVar[str] = "crop"
    KEYS: ClassVar[dict[str, Reader]] = {"crop_height": read_int, "crop_width": read_int, "noadjust": read_int}
    TRAINING_KEYS: ClassVar[str] = "flip exposure saturation angle shift"

    @classmethod
    def parse(cls, reading: Reading, index: int) -> Crop:
        return cls(index, reading.section.line, crop_height=reading.positive("crop_height", 1),
                   crop_width=reading.positive("crop_width", 1), noadjust=bool(reading.get("noadjust", 0)))

    def crop_size(self, net: Net, height: int, width: int) -> tuple[int, int]:
        """Darknet scales the crop with the network: out = crop * (input size / [net] size)."""
        return int(self.crop_height / net.height * height), int(self.crop_width / net.width * width)

    def out_shape(self, context: Context, shapes: Sequence[Shape], incoming: Shape) -> Shape:
        h, w, c = incoming
        out_h, out_w = self.crop_size(context.net, h, w)
        if out_h > h or out_w > w or min(out_h, out_w) < 1:
            raise CfgError(f"{self.where(context.source)}: the crop is {out_w}x{out_h}, its input {w}x{h}; a crop "
                           "must fit inside its input")
        return out_h, out_w, c

    def forward(self, x: Array, outputs: Sequence[Array], context: Context) -> Array:
        """Darknet's inference crop: centred, and mapped from [0, 1] to [-1, 1] unless noadjust."""
        out_h, out_w = self.crop_size(context.net, x.shape[1], x.shape[2])
        top, left = (x.shape[1] - out_h) // 2, (x.shape[2] - out_w) // 2
        y = x[:, top : top + out_h, left : left + out_w]
        return y if self.noadjust else 2.0 * y - 1.0


HEAD_TRAINING_KEYS = {
    "yolo": (
        "mask anchors classes num jitter ignore_thresh truth_thresh random scale_x_y iou_thresh "
        "cls_normalizer iou_normalizer iou_loss nms_kind beta_nms max_delta counters_per_class "
        "label_smooth_eps resize new_coords objectness_smooth focal_loss max map"
    ),
    "region": (
        "anchors classes coords num softmax jitter rescore thresh classfix absolute random bias_match "
        "object_scale noobject_scale class_scale coord_scale log tree map max"
    ),
    "detection": (
        "classes coords rescore side num softmax sqrt jitter object_scale noobject_scale class_scale "
        "coord_scale forced random reorg"
    ),
    "cost": "type scale ratio noobject_scale thresh",
}


@dataclass(frozen=True)
class Head(Layer):
    """A detection or cost head: parsed so the cfg loads, but it has no forward pass here."""

    head_type: str

    @property
    def kind(self) -> str:
        return self.head_type

    @classmethod
    def parse(cls, reading: Reading, index: int) -> Head:
        return cls(index, reading.section.line, head_type=reading.section.name)

    def forward(self, x: Array, outputs: Sequence[Array], context: Context) -> Array:
        raise OptionError(f"layer {self.index} is a [{self.kind}] head ({self.where(context.source)}), which has no "
                          "forward pass in jaxdream; pick an earlier layer")


LAYER_TYPES: dict[str, type[Layer]] = {
    **{cls.KIND: cls for cls in (Conv, MaxPool, AvgPool, Connected, Softmax, Dropout, Route, Shortcut, Upsample,
                                 Crop)},
    **dict.fromkeys(HEAD_TRAINING_KEYS, Head),
}


def training_keys(section: str) -> list[str]:
    """The training-only options a section may carry (accepted and ignored)."""
    return (HEAD_TRAINING_KEYS.get(section, "") if LAYER_TYPES[section] is Head
            else LAYER_TYPES[section].TRAINING_KEYS).split()
