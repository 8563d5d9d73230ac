"""A Darknet network as one Flax module: each layer's own forward pass (layers.py) in order, returning the
activations of the requested layers."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxdream.darknet import cfg as C
from jaxdream.darknet.layers import Context, Shape

Array = jax.Array


class Network(nn.Module):
    """A Darknet network; ``__call__(x, layers)`` returns {index: activation} and stops at the deepest index."""

    cfg: C.Cfg
    in_shapes: tuple[Shape, ...]  # per layer, at the [net] size (what parameter shapes depend on)
    precision: str = "f32"  # compute mode of every convolution and connected layer (ops.COMPUTE_MODES)

    @nn.compact
    def __call__(self, x: Array, layers: Sequence[int]) -> dict[int, Array]:
        wanted = sorted(set(layers))
        outputs: list[Array] = []
        for spec in self.cfg.layers[: wanted[-1] + 1]:
            x = spec.forward(x, outputs, Context(self.cfg.source, self.cfg.net, self.in_shapes[spec.index],
                                                 self.precision))
            outputs.append(x)
        return {i: outputs[i] for i in wanted}
