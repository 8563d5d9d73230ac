"""Output shapes of every layer for a given input size, following Darknet's size rules (each layer type's own
rule is its ``out_shape`` in layers.py)."""

from __future__ import annotations

from jaxdream.darknet import cfg as C
from jaxdream.darknet.layers import Context, Shape, maxpool_out
from jaxdream.errors import CfgError

__all__ = ["Shape", "input_shapes", "layer_shapes", "maxpool_out"]


def layer_shapes(
    cfg: C.Cfg, height: int | None = None, width: int | None = None, upto: int | None = None
) -> list[Shape]:
    """Output shapes of layers 0 .. upto (default all) for a height x width input (default: the [net] size)."""
    height = cfg.net.height if height is None else height
    width = cfg.net.width if width is None else width
    shapes: list[Shape] = []
    incoming: Shape = (height, width, cfg.net.channels)
    for layer in cfg.layers[: None if upto is None else upto + 1]:
        shape = layer.out_shape(Context(cfg.source, cfg.net, incoming), shapes, incoming)
        if min(shape) < 1:
            raise CfgError(
                f"{cfg.where(layer)}: layer {layer.index} ({layer.kind}) would have output {shape[0]}x{shape[1]}x"
                f"{shape[2]} for a {height}x{width} input; use a larger input or fewer downsampling layers"
            )
        shapes.append(shape)
        incoming = shape
    return shapes


def input_shapes(cfg: C.Cfg) -> list[Shape]:
    """The shape each layer receives at the cfg's [net] size (what parameter shapes depend on)."""
    shapes = layer_shapes(cfg)
    return [(cfg.net.height, cfg.net.width, cfg.net.channels), *shapes[:-1]]
