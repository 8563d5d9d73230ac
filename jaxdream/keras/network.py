"""A Keras layer chain as a Flax module, with Keras' own arithmetic (TF 'same' padding, BN epsilon inside the
root, channels-last flatten)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdream.keras.layers import ACTIVATIONS, KLayer
from jaxdream.ops import conv, dense, max_pool

Array = jax.Array


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same': out = ceil(size / stride), the odd pixel of padding goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(x: Array, kernel: Array, layer: KLayer, groups: int, precision: str) -> Array:
    if layer.padding == "same":
        pads = [_same_pads(x.shape[i], layer.kernel[i - 1], layer.strides[i - 1]) for i in (1, 2)]
    else:
        pads = [(0, 0), (0, 0)]
    return conv(x, kernel, layer.strides, pads, groups, precision)


class KerasNetwork(nn.Module):
    """The chain of layers; returns {index: activation}, or the logits (the final softmax's input)."""

    layers: tuple[KLayer, ...]
    precision: str = "f32"  # compute mode of every convolution and dense layer (nn.COMPUTE_MODES)

    def _layer(self, layer: KLayer, x: Array, strip_softmax: bool) -> Array:
        p = functools.partial(self.param, init_fn=nn.initializers.zeros)
        act = "linear" if strip_softmax and layer.activation == "softmax" else layer.activation
        if layer.kind == "Conv2D":
            kernel = p(f"{layer.name}/kernel", shape=(*layer.kernel, x.shape[-1], layer.filters))
            y = _conv(x, kernel, layer, 1, self.precision)
        elif layer.kind == "DepthwiseConv2D":
            c = x.shape[-1]
            kernel = p(f"{layer.name}/depthwise_kernel", shape=(*layer.kernel, c, layer.depth_multiplier))
            y = _conv(x, kernel.reshape(*layer.kernel, 1, c * layer.depth_multiplier), layer, c, self.precision)
        elif layer.kind == "Dense":
            kernel = p(f"{layer.name}/kernel", shape=(x.shape[-1], layer.units))
            y = dense(x, kernel, self.precision)
        elif layer.kind == "BatchNormalization":
            c = x.shape[-1]
            mean, var = p(f"{layer.name}/moving_mean", shape=(c,)), p(f"{layer.name}/moving_variance", shape=(c,))
            y = (x - mean) / jnp.sqrt(var + layer.epsilon)
            y = y * p(f"{layer.name}/gamma", shape=(c,)) if layer.scale else y
            return y + p(f"{layer.name}/beta", shape=(c,)) if layer.center else y
        elif layer.kind == "ReLU":
            y = jnp.where(x >= layer.threshold, x, layer.negative_slope * (x - layer.threshold))
            return y if layer.max_value is None else jnp.minimum(y, layer.max_value)
        elif layer.kind == "ZeroPadding2D":
            return jnp.pad(x, ((0, 0), *layer.zero_pad, (0, 0)))
        elif layer.kind == "MaxPooling2D":
            pads = [_same_pads(x.shape[i], layer.kernel[i - 1], layer.strides[i - 1]) for i in (1, 2)] \
                if layer.padding == "same" else [(0, 0), (0, 0)]
            return max_pool(x, layer.kernel, layer.strides, pads)
        elif layer.kind == "GlobalAveragePooling2D":
            return jnp.mean(x, axis=(1, 2), keepdims=layer.keepdims)
        elif layer.kind == "Flatten":
            return x.reshape(x.shape[0], -1)
        elif layer.kind == "Reshape":
            return x.reshape(x.shape[0], *layer.target_shape)
        elif layer.kind == "Dropout":
            return x
        else:  # Activation
            return ACTIVATIONS[act](x)
        if layer.use_bias:
            y = y + p(f"{layer.name}/bias", shape=(y.shape[-1],))
        return ACTIVATIONS[act](y)

    @nn.compact
    def __call__(self, x: Array, layers: tuple[int, ...] = (), logits: bool = False) -> Any:
        last = len(self.layers) - 1 if logits else max(layers)
        outputs = {}
        for i, layer in enumerate(self.layers[: last + 1]):
            if logits and i == last and layer.kind == "Activation" and layer.activation == "softmax":
                return x.reshape(x.shape[0], -1)
            x = self._layer(layer, x, strip_softmax=logits and i == last)
            outputs[i] = x
        return x.reshape(x.shape[0], -1) if logits else {i: outputs[i] for i in layers}


