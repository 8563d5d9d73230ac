"""The three parts a dream step is assembled from, each a small protocol with named implementations.

- A **parameterisation**: how the optimised image is looked at by each branch of the step (the sizes it is viewed
  at, the view, and the way the gradient comes back to the image's own size). Today: pixels at Darknet's octaves.
- A **transform**: the random change applied around the network, drawn into each iteration's schedule row
  (layer, octave, dx, dy, flip), and undone on the gradient. Today: Darknet's edge-clamped shift and flip.
- An **objective**: a pure function of the requested activations or logits (``jaxdream.objectives``).

A ``DreamConfig`` names its parameterisation and transform (``param=``, ``transform=``); the compiled step, the
tiled step and every mode look them up here, so a new one is one class and one registry entry.

Each part takes an optional ``Region``: on a canvas (images of several sizes sharing one program, each in the
top-left corner) the image's true size and its view's, traced, which every size-dependent operation uses instead
of the array's shape. A part says whether it has that form (``canvas``); without it, each size is dreamed on its
own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import jax
import numpy as np

from jaxdream import image as I

Array = jax.Array
Size = tuple[int, int]
OCTAVE_BASE = 1.33333333  # Darknet's literal


def octave_size(height: int, width: int, octave: int) -> Size:
    """(int)(size * scale) with Darknet's float scale = 1 / 1.33333333^octave."""
    scale = np.float32(1.0 / math.pow(OCTAVE_BASE, octave))
    return int(np.float32(height) * scale), int(np.float32(width) * scale)


class Region(NamedTuple):
    """On a canvas: one image's true (h, w) (``full``) and its view's at this branch (``view``), int32 (2,)."""

    full: Array
    view: Array


class Parameterisation(Protocol):
    """How a step looks at the image it optimises."""

    def sizes(self, height: int, width: int, count: int) -> list[Size]:
        """The ``count`` sizes a step may view an image of this size at (one branch each)."""

    def view(self, image: Array, size: Size, region: Region | None = None) -> Array:
        """The image (..., H, W, 3) as the branch of ``size`` sees it."""

    def back(self, grad: Array, full: Size, region: Region | None = None) -> Array:
        """A view's gradient carried back to the image's own size ``full``."""


class Transform(Protocol):
    """A random change around the network, drawn into the schedule row (layer, octave, dx, dy, flip)."""

    def before(self, image: Array, row: Array, region: Region | None = None) -> Array:
        """Applied to the full-size image before it is viewed."""

    def inside(self, view: Array, row: Array, region: Region | None = None) -> Array:
        """Applied to the view the network sees (its own inverse for the gradient)."""

    def undo_before(self, grad: Array, row: Array, region: Region | None = None) -> Array:
        """``before`` undone on the full-size gradient."""


@dataclass(frozen=True)
class DarknetOctaves:
    """Pixels, viewed at Darknet's octave sizes with Darknet's own (align-corners, truncated) resize."""

    canvas: bool = True  # takes a Region

    def sizes(self, height: int, width: int, count: int) -> list[Size]:
        return [octave_size(height, width, octave) for octave in range(count)]

    def view(self, image: Array, size: Size, region: Region | None = None) -> Array:
        return I.darknet_resize(image, *size, None if region is None else (region.full, region.view))

    def back(self, grad: Array, full: Size, region: Region | None = None) -> Array:
        return I.darknet_resize(grad, *full, None if region is None else (region.view, region.full))


@dataclass(frozen=True)
class DarknetJitter:
    """Darknet's jitter: an edge-clamped shift of the full image by (dx, dy), and a left-right flip of the view."""

    canvas: bool = True

    def before(self, image: Array, row: Array, region: Region | None = None) -> Array:
        return I.shift(image, row[2], row[3], None if region is None else region.full)

    def inside(self, view: Array, row: Array, region: Region | None = None) -> Array:
        return I.flip_if(view, row[4].astype(bool), None if region is None else region.view[1])

    def undo_before(self, grad: Array, row: Array, region: Region | None = None) -> Array:
        return I.shift(grad, -row[2], -row[3], None if region is None else region.full)


PARAMETERISATIONS: dict[str, Parameterisation] = {"darknet-octaves": DarknetOctaves()}
TRANSFORMS: dict[str, Transform] = {"darknet-jitter": DarknetJitter()}
