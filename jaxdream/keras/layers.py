"""Keras layers: the typed config, parsing a model file's layer list (linear chains only), each kind's forward
pass with Keras' own arithmetic (TF 'same' padding, BN epsilon inside the root, channels-last flatten), and the
built-in VGG architectures. A new layer kind is one function here, listed in FORWARD. Layer indices count the
layers after the InputLayer, from 0, like Darknet's."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h5py
import jax
import jax.numpy as jnp

from jaxdream.errors import WeightsError
from jaxdream.ops import conv, dense, max_pool, relu

Array = jax.Array
Param = Callable[[str, tuple[int, ...]], Array]  # (weight name, shape) -> the layer's parameter

ACTIVATIONS = {
    "linear": lambda x: x, "relu": relu, "relu6": lambda x: jnp.clip(x, 0, 6), "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh, "softmax": lambda x: jax.nn.softmax(x, axis=-1),
}


@dataclass(frozen=True)
class KLayer:
    """One Keras layer, typed: only the options the forward pass needs."""

    kind: str
    name: str
    filters: int = 0
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    use_bias: bool = True
    activation: str = "linear"
    depth_multiplier: int = 1
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True
    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0
    zero_pad: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    keepdims: bool = False
    target_shape: tuple[int, ...] = ()
    units: int = 0

    def __post_init__(self) -> None:
        """Values a hand-edited file may get wrong, refused here instead of failing inside a trace."""
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"layer name {self.name!r} is not a name")
        if self.kind not in FORWARD:
            raise ValueError(f"layer {self.name!r}: unknown type {self.kind!r}")
        sizes = {"kernel size": self.kernel, "strides": self.strides, "target shape": self.target_shape or (1,),
                 "filters": (self.filters or 1,), "units": (self.units or 1,),
                 "depth multiplier": (self.depth_multiplier,)}
        for what, values in sizes.items():
            if not all(isinstance(v, int) and v >= 1 for v in values):
                raise ValueError(f"layer {self.name!r}: {what} {values} must be positive whole numbers")
        if self.padding not in ("valid", "same") or min(v for pair in self.zero_pad for v in pair) < 0:
            raise ValueError(f"layer {self.name!r}: padding {self.padding!r} / {self.zero_pad} is not valid")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"layer {self.name!r}: activation {self.activation!r}; supported: "
                             f"{', '.join(ACTIVATIONS)}")



def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same': out = ceil(size / stride), the odd pixel of padding goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pads(x: Array, layer: KLayer) -> list[tuple[int, int]]:
    if layer.padding == "same":
        return [_same_pads(x.shape[i], layer.kernel[i - 1], layer.strides[i - 1]) for i in (1, 2)]
    return [(0, 0), (0, 0)]


def _biased(layer: KLayer, y: Array, param: Param, activation: str) -> Array:
    y = y + param("bias", (y.shape[-1],)) if layer.use_bias else y
    return ACTIVATIONS[activation](y)


def _conv2d(layer: KLayer, x: Array, param: Param, precision: str, activation: str) -> Array:
    kernel = param("kernel", (*layer.kernel, x.shape[-1], layer.filters))
    return _biased(layer, conv(x, kernel, layer.strides, _pads(x, layer), 1, precision), param, activation)


def _depthwise(layer: KLayer, x: Array, param: Param, precision: str, activation: str) -> Array:
    c = x.shape[-1]
    kernel = param("depthwise_kernel", (*layer.kernel, c, layer.depth_multiplier))
    y = conv(x, kernel.reshape(*layer.kernel, 1, c * layer.depth_multiplier), layer.strides, _pads(x, layer), c,
             precision)
    return _biased(layer, y, param, activation)


def _dense(layer: KLayer, x: Array, param: Param, precision: str, activation: str) -> Array:
    return _biased(layer, dense(x, param("kernel", (x.shape[-1], layer.units)), precision), param, activation)


def _batch_norm(layer: KLayer, x: Array, param: Param, precision: str, activation: str) -> Array:
    c = x.shape[-1]
    y = (x - param("moving_mean", (c,))) / jnp.sqrt(param("moving_variance", (c,)) + layer.epsilon)
    y = y * param("gamma", (c,)) if layer.scale else y
    return y + param("beta", (c,)) if layer.center else y


def _relu(layer: KLayer, x: Array, param: Param, precision: str, activation: str) -> Array:
    y = jnp.where(x >= layer.threshold, x, layer.negative_slope * (x - layer.threshold))
    return y if layer.max_value is None else jnp.minimum(y, layer.max_value)


FORWARD: dict[str, Callable[[KLayer, Array, Param, str, str], Array]] = {
    "Conv2D": _conv2d,
    "DepthwiseConv2D": _depthwise,
    "Dense": _dense,
    "BatchNormalization": _batch_norm,
    "ReLU": _relu,
    "ZeroPadding2D": lambda layer, x, *_: jnp.pad(x, ((0, 0), *layer.zero_pad, (0, 0))),
    "MaxPooling2D": lambda layer, x, *_: max_pool(x, layer.kernel, layer.strides, _pads(x, layer)),
    "GlobalAveragePooling2D": lambda layer, x, *_: jnp.mean(x, axis=(1, 2), keepdims=layer.keepdims),
    "Flatten": lambda layer, x, *_: x.reshape(x.shape[0], -1),
    "Reshape": lambda layer, x, *_: x.reshape(x.shape[0], *layer.target_shape),
    "Dropout": lambda layer, x, *_: x,
    "Activation": lambda layer, x, param, precision, activation: ACTIVATIONS[activation](x),
}


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _zero_pad(value: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(value, int):
        return (value, value), (value, value)
    rows, cols = value
    return (_pair(rows) if not isinstance(rows, int) else (rows, rows)), \
        (_pair(cols) if not isinstance(cols, int) else (cols, cols))


def parse_layer(entry: dict[str, Any], source: str) -> KLayer | None:
    """A Keras layer config -> KLayer (None for the InputLayer); unsupported layers name themselves and the file."""
    kind, c = entry["class_name"], entry.get("config", {})
    name = c.get("name", entry.get("name", "?"))
    if kind == "InputLayer":
        return None
    if kind not in FORWARD:
        raise WeightsError(
            f"{source}: layer {name!r} is a {kind}, which jaxdream does not support; supported: {', '.join(FORWARD)}"
        )
    if tuple(_pair(c.get("dilation_rate", 1))) != (1, 1):
        raise WeightsError(f"{source}: layer {name!r} uses dilation, which jaxdream does not support")
    if c.get("data_format", "channels_last") not in (None, "channels_last"):
        raise WeightsError(f"{source}: layer {name!r} is {c['data_format']}; jaxdream reads channels_last models only "
                           "(re-save the model with data_format='channels_last')")
    activation = c.get("activation", "linear")
    if kind == "ReLU":
        activation = "relu"
    if activation not in ACTIVATIONS:
        raise WeightsError(
            f"{source}: layer {name!r} has activation {activation!r}; supported: {', '.join(ACTIVATIONS)}"
        )
    pool = c.get("pool_size", 2)
    return KLayer(
        kind, name, filters=int(c.get("filters", 0)),
        kernel=_pair(c.get("kernel_size", pool)), strides=_pair(c.get("strides") or pool),
        padding=c["padding"] if isinstance(c.get("padding"), str) else "valid",
        use_bias=bool(c.get("use_bias", True)), activation=activation,
        depth_multiplier=int(c.get("depth_multiplier", 1)), epsilon=float(c.get("epsilon", 1e-3)),
        center=bool(c.get("center", True)), scale=bool(c.get("scale", True)),
        max_value=None if c.get("max_value") is None else float(c["max_value"]),
        negative_slope=float(c.get("negative_slope", 0.0)), threshold=float(c.get("threshold", 0.0)),
        zero_pad=_zero_pad(c.get("padding", 0)) if kind == "ZeroPadding2D" else ((0, 0), (0, 0)),
        keepdims=bool(c.get("keepdims", False)), target_shape=tuple(c.get("target_shape", ())),
        units=int(c.get("units", 0)),
    )



def nonempty(layers: tuple[KLayer, ...]) -> tuple[KLayer, ...]:
    if not layers:
        raise ValueError("the model has no layers")
    return layers


def input_hw_of(shape: Any) -> tuple[int, int]:
    """(height, width) from a Keras input shape (batch, h, w, c) or a stored (h, w); both positive."""
    hw = tuple(shape[1:3]) if len(shape) == 4 else tuple(shape)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in hw):
        raise ValueError(f"input shape {shape} needs a fixed positive height and width")
    return hw



def full_model_layers(f: h5py.File, source: str) -> tuple[str, tuple[KLayer, ...], tuple[int, int]]:
    config = json.loads(f.attrs["model_config"])
    entries = config["config"]["layers"]
    check_chain(entries, source)
    layers = tuple(layer for layer in (parse_layer(e, source) for e in entries) if layer is not None)
    shape = entries[0]["config"].get("batch_input_shape") or entries[0]["config"].get("batch_shape")
    if len(shape) != 4 or shape[3] != 3:
        raise ValueError(f"input shape {shape} is not (batch, height, width, 3)")
    return str(config["config"]["name"]), nonempty(layers), input_hw_of(shape)



def check_chain(entries: list[dict[str, Any]], source: str) -> None:
    for previous, entry in itertools.pairwise(entries):
        inbound = entry.get("inbound_nodes") or []
        sources = [node[0] for nodes in inbound for node in (nodes if isinstance(nodes, list) else [])
                   if isinstance(node, list)]
        if sources and (len(sources) != 1 or sources[0] != previous["config"]["name"]):
            raise WeightsError(
                f"{source}: layer {entry['config']['name']!r} does not follow {previous['config']['name']!r}: "
                "only linear chains of layers are supported"
            )


def _vgg(stages: tuple[int, ...], include_top: bool) -> tuple[KLayer, ...]:
    layers = []
    for block, (filters, count) in enumerate(zip((64, 128, 256, 512, 512), stages, strict=True), start=1):
        layers += [KLayer("Conv2D", f"block{block}_conv{i}", filters=filters, kernel=(3, 3), padding="same",
                          activation="relu") for i in range(1, count + 1)]
        layers.append(KLayer("MaxPooling2D", f"block{block}_pool", kernel=(2, 2), strides=(2, 2)))
    if include_top:
        layers += [KLayer("Flatten", "flatten"), KLayer("Dense", "fc1", units=4096, activation="relu"),
                   KLayer("Dense", "fc2", units=4096, activation="relu"),
                   KLayer("Dense", "predictions", units=1000, activation="softmax")]
    return tuple(layers)


KERAS_ARCHITECTURES = {"vgg-16": (2, 2, 3, 3, 3), "vgg-19": (2, 2, 4, 4, 4)}


def keras_architecture(name: str, include_top: bool = True) -> tuple[tuple[KLayer, ...], tuple[int, int]]:
    if name not in KERAS_ARCHITECTURES:
        raise WeightsError(
            f"no built-in Keras architecture {name!r}; known: {', '.join(KERAS_ARCHITECTURES)}, "
            "or the path of a full Keras model file"
        )
    return _vgg(KERAS_ARCHITECTURES[name], include_top), (224, 224)
