"""A Darknet network as one Flax module: each layer's own forward pass (layers.py) in order, returning the
activations of the requested layers.

On a canvas (images of several sizes in one program, each in the top-left corner, its true size a runtime
argument) every layer's output is zeroed beyond each image's own output size, so the next convolution sees
Darknet's zero padding, and a max-pool's input is -inf there, Darknet's max-pool padding: the canvas gives each
image the same values as a network of its own size. Only the layer kinds in ``CANVAS_KINDS`` keep that promise.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdream.darknet import cfg as C
from jaxdream.darknet.layers import Context, MaxPool, Shape
from jaxdream.ops import region_mask

Array = jax.Array
# Layers whose output at each position depends only on a window of their input (or copies it), so masking gives
# the values of the image's own size; pooling to one value, connected layers and crops depend on the whole size.
CANVAS_KINDS = ("convolutional", "maxpool", "route", "shortcut", "upsample", "dropout")


class Network(nn.Module):
    """A Darknet network; ``__call__(x, layers)`` returns {index: activation} and stops at the deepest index."""

    cfg: C.Cfg
    in_shapes: tuple[Shape, ...]  # per layer, at the [net] size (what parameter shapes depend on)
    precision: str = "f32"  # compute mode of every convolution and connected layer (ops.COMPUTE_MODES)

    @nn.compact
    def __call__(self, x: Array, layers: Sequence[int], valid: Array | None = None) -> dict[int, Array]:
        """``valid``: on a canvas, (N, 1 + layers, 2) each image's true (h, w) of the input and of every layer's
        output up to the deepest requested."""
        wanted = sorted(set(layers))
        outputs: list[Array] = []
        for spec in self.cfg.layers[: wanted[-1] + 1]:
            if valid is not None and isinstance(spec, MaxPool):
                x = jnp.where(region_mask(valid[:, spec.index], *x.shape[1:3]), x, -jnp.inf)
            x = spec.forward(x, outputs, Context(self.cfg.source, self.cfg.net, self.in_shapes[spec.index],
                                                 self.precision))
            if valid is not None:
                x = jnp.where(region_mask(valid[:, spec.index + 1], *x.shape[1:3]), x, 0.0)
            outputs.append(x)
        return {i: outputs[i] for i in wanted}
