"""A Keras layer chain as a Flax module: each layer's forward pass (layers.FORWARD) in order."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from jaxdream.keras.layers import FORWARD, KLayer

Array = jax.Array


class KerasNetwork(nn.Module):
    """The chain of layers; returns {index: activation}, or the logits (the final softmax's input)."""

    layers: tuple[KLayer, ...]
    precision: str = "f32"  # compute mode of every convolution and dense layer (ops.COMPUTE_MODES)

    def _layer(self, layer: KLayer, x: Array, strip_softmax: bool) -> Array:
        def param(weight: str, shape: tuple[int, ...]) -> Array:
            return self.param(f"{layer.name}/{weight}", nn.initializers.zeros, shape)

        activation = "linear" if strip_softmax and layer.activation == "softmax" else layer.activation
        return FORWARD[layer.kind](layer, x, param, self.precision, activation)

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


