"""Darknet's layer types as Flax modules, and a Network that returns the activations of requested layers.

Everything is NHWC float32. The arithmetic follows Darknet (golden README Q3-Q8): batch-norm adds its epsilon to
the standard deviation, max-pools pad Darknet's way, connected layers flatten in C,H,W order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdream.darknet import cfg as C
from jaxdream.darknet.shapes import crop_out
from jaxdream.errors import OptionError
from jaxdream.ops import conv, dense, max_pool, same_conv

Array = jax.Array
DARKNET_BN_EPSILON = 1e-6


def _softplus_threshold(x: Array) -> Array:
    return jnp.where(x > 20.0, x, jnp.log1p(jnp.exp(jnp.minimum(x, 20.0))))


ACTIVATION_FUNCTIONS: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": lambda x: x * (x > 0),
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


class DarknetConv(nn.Module):
    spec: C.Conv
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
    spec: C.Connected
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



def maxpool(x: Array, spec: C.MaxPool) -> Array:
    """Darknet max-pool: out = (w + padding - size) // stride + 1, windows start at -(padding // 2)."""
    lo = spec.padding // 2
    return max_pool(x, (spec.size, spec.size), (spec.stride, spec.stride), [(lo, spec.padding - lo)] * 2)


def softmax(x: Array, spec: C.Softmax) -> Array:
    flat = nchw_flat(x).reshape(x.shape[0], spec.groups, -1)
    probs = jax.nn.softmax(flat / spec.temperature, axis=-1)
    n, h, w, c = x.shape
    return probs.reshape(n, c, h, w).transpose(0, 2, 3, 1)


def route(outputs: Sequence[Array], spec: C.Route) -> Array:
    parts = []
    for source in spec.layers:
        y = outputs[source]
        width = y.shape[-1] // spec.groups
        parts.append(y[..., spec.group_id * width : (spec.group_id + 1) * width])
    return jnp.concatenate(parts, axis=-1)


def shortcut(previous: Array, source: Array, spec: C.Shortcut) -> Array:
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


def upsample(x: Array, spec: C.Upsample) -> Array:
    return spec.scale * jnp.repeat(jnp.repeat(x, spec.stride, axis=1), spec.stride, axis=2)


def crop(x: Array, spec: C.Crop, out_hw: tuple[int, int]) -> Array:
    """Darknet's inference crop: centred, and mapped from [0, 1] to [-1, 1] unless noadjust."""
    out_h, out_w = out_hw
    top, left = (x.shape[1] - out_h) // 2, (x.shape[2] - out_w) // 2
    y = x[:, top : top + out_h, left : left + out_w]
    return y if spec.noadjust else 2.0 * y - 1.0


class Network(nn.Module):
    """A Darknet network; ``__call__(x, layers)`` returns {index: activation} and stops at the deepest index."""

    cfg: C.Cfg
    in_channels: tuple[int, ...]  # per layer, at the [net] size (what parameter shapes depend on)
    in_features: tuple[int, ...]
    precision: str = "f32"  # compute mode of every convolution and connected layer (COMPUTE_MODES)

    @nn.compact
    def __call__(self, x: Array, layers: Sequence[int]) -> dict[int, Array]:
        wanted = sorted(set(layers))
        outputs: list[Array] = []
        for spec in self.cfg.layers[: wanted[-1] + 1]:
            i = spec.index
            name = f"layer_{i}"
            if isinstance(spec, C.Conv):
                x = DarknetConv(spec, self.in_channels[i], self.precision, name=name)(x)
            elif isinstance(spec, C.Connected):
                x = DarknetConnected(spec, self.in_features[i], self.precision, name=name)(x)
            elif isinstance(spec, C.MaxPool):
                x = maxpool(x, spec)
            elif isinstance(spec, C.AvgPool):
                x = jnp.mean(x, axis=(1, 2), keepdims=True)
            elif isinstance(spec, C.Softmax):
                x = softmax(x, spec)
            elif isinstance(spec, C.Dropout):
                pass
            elif isinstance(spec, C.Route):
                x = route(outputs, spec)
            elif isinstance(spec, C.Shortcut):
                x = shortcut(x, outputs[spec.source], spec)
            elif isinstance(spec, C.Upsample):
                x = upsample(x, spec)
            elif isinstance(spec, C.Crop):
                x = crop(x, spec, crop_out(self.cfg, spec, x.shape[1], x.shape[2]))
            else:
                raise OptionError(
                    f"layer {i} is a [{spec.kind}] head "
                    f"({self.cfg.where(spec)}), which has no forward pass in jaxdream; pick an earlier layer"
                )
            outputs.append(x)
        return {i: outputs[i] for i in wanted}
