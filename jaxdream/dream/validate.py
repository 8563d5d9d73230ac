"""A dream's options checked against its model and image before anything is compiled: every layer it may visit
exists and has an output at every octave size, the round options are numbers in range, a zoom crops something."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jaxdream import checks
from jaxdream.dream import core
from jaxdream.errors import JaxdreamError, SizeError

if TYPE_CHECKING:
    from jaxdream.protocol import Model

MAX_ZOOMED_SIDE = 1 << 16  # a zoom that would crop more than this many pixels per side is refused


def check_round_options(rate: float, rounds: int, zoom: float, rotate: float) -> None:
    """The options of the round loop, each checked on its own (one error naming the option)."""
    checks.check_number("rate", rate, 0.0)
    checks.check_number("zoom", zoom, 0.0, strict=True)
    checks.check_number("rotate", rotate)
    checks.check_count("rounds", rounds, 1)


def check_zoom(zoom: float, rounds: int, height: int, width: int) -> None:
    """Darknet's zoom crops int(size * zoom) pixels: at least one, and not absurdly many."""
    if rounds < 2 or zoom == 1.0:
        return
    side = min(int(height * zoom), int(width * zoom))
    if side < 1 or max(height, width) * zoom > MAX_ZOOMED_SIDE:
        raise SizeError(f"--zoom {zoom} on a {width}x{height} image crops {int(width * zoom)}x{int(height * zoom)} "
                          f"pixels between rounds; use a zoom between {1 / min(height, width):.3g} and "
                          f"{MAX_ZOOMED_SIDE / max(height, width):.3g}")


def validate(model: Model, config: core.DreamConfig, height: int, width: int) -> None:
    """Every layer the run may visit exists, can run, and has a non-empty output at every octave size."""
    for layer in config.layers:
        model.check_layer(layer, "layer" if config.layer_range == 1 else f"layer (from --range {config.layer_range})")
    for octave, (oh, ow) in enumerate(config.parameterisation.sizes(height, width, config.octave_count)):
        try:
            fits = min(oh, ow) >= 1 and bool(model.layer_output_shapes(oh, ow, max(config.layers)))
        except JaxdreamError:
            fits = False
        if not fits:
            raise SizeError(
                f"the {width}x{height} image is too small: at octave {octave} ({ow}x{oh}) layer {max(config.layers)} "
                "of the network has no output; use a larger image, fewer --octaves or an earlier layer"
            )
