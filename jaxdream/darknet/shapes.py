"""Output shapes of every layer for a given input size, following Darknet's size rules."""

from __future__ import annotations

from jaxdream.darknet import cfg as C
from jaxdream.errors import CfgError

Shape = tuple[int, int, int]  # (height, width, channels)


def conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def maxpool_out(size: int, layer: C.MaxPool) -> int:
    return (size + layer.padding - layer.size) // layer.stride + 1


def crop_out(cfg: C.Cfg, layer: C.Crop, height: int, width: int) -> tuple[int, int]:
    """Darknet scales the crop with the network: out = crop * (input size / [net] size)."""
    scale_h = layer.crop_height / cfg.net.height
    scale_w = layer.crop_width / cfg.net.width
    return int(scale_h * height), int(scale_w * width)


def _layer_shape(cfg: C.Cfg, layer: C.Layer, shapes: list[Shape], incoming: Shape) -> Shape:
    h, w, c = incoming
    where = cfg.where(layer)
    if isinstance(layer, C.Conv):
        if c % layer.groups or layer.filters % layer.groups:
            raise CfgError(
                f"{where}: groups={layer.groups} must divide both the {c} input channels and filters={layer.filters}"
            )
        return conv_out(h, layer.size, layer.stride, layer.pad), conv_out(w, layer.size, layer.stride, layer.pad), \
            layer.filters
    if isinstance(layer, C.MaxPool):
        return maxpool_out(h, layer), maxpool_out(w, layer), c
    if isinstance(layer, C.AvgPool):
        return 1, 1, c
    if isinstance(layer, C.Connected):
        return 1, 1, layer.output
    if isinstance(layer, C.Softmax):
        if (h * w * c) % layer.groups:
            raise CfgError(f"{where}: groups={layer.groups} must divide the {h * w * c} inputs of the softmax")
        return incoming
    if isinstance(layer, C.Dropout):
        return incoming
    if isinstance(layer, C.Route):
        first = shapes[layer.layers[0]]
        total = 0
        for source in layer.layers:
            sh, sw, sc = shapes[source]
            if (sh, sw) != first[:2]:
                raise CfgError(
                    f"{where}: route joins layer {layer.layers[0]} ({first[0]}x{first[1]}) with layer {source} "
                    f"({sh}x{sw}); routed layers must have the same height and width"
                )
            if sc % layer.groups:
                raise CfgError(f"{where}: groups={layer.groups} must divide the {sc} channels of layer {source}")
            total += sc // layer.groups
        return first[0], first[1], total
    if isinstance(layer, C.Shortcut):
        sh, sw, _ = shapes[layer.source]
        ok = (sh >= h and sh % h == 0 and sw % w == 0 and sh // h == sw // w) or \
             (h % sh == 0 and w % sw == 0 and h // sh == w // sw)
        if not ok:
            raise CfgError(
                f"{where}: shortcut adds layer {layer.source} ({sh}x{sw}) to {h}x{w}; the sizes must be equal or "
                "differ by the same whole factor in both directions"
            )
        return incoming
    if isinstance(layer, C.Upsample):
        return h * layer.stride, w * layer.stride, c
    if isinstance(layer, C.Crop):
        out_h, out_w = crop_out(cfg, layer, h, w)
        if out_h > h or out_w > w or min(out_h, out_w) < 1:
            raise CfgError(f"{where}: the crop is {out_w}x{out_h}, its input {w}x{h}; a crop must fit inside its input")
        return out_h, out_w, c
    return incoming  # heads keep their input's shape; they cannot run forward anyway


def layer_shapes(
    cfg: C.Cfg, height: int | None = None, width: int | None = None, upto: int | None = None
) -> list[Shape]:
    """Output shapes of layers 0 .. upto (default all) for a height x width input (default: the [net] size)."""
    height = cfg.net.height if height is None else height
    width = cfg.net.width if width is None else width
    shapes: list[Shape] = []
    incoming: Shape = (height, width, cfg.net.channels)
    for layer in cfg.layers[: None if upto is None else upto + 1]:
        shape = _layer_shape(cfg, layer, shapes, incoming)
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
