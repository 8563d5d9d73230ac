"""Random transforms applied to a rendered image before the network, so what it learns to show survives small
shifts, scales and rotations (Olah et al., Distill 2017). Each is a frozen (hashable: part of a program's key)
callable ``(key, image (h, w, 3)) -> image``, pure and seeded; ``apply`` runs a chain, each with its own key.

The ``standard`` preset is lucent's: pad 12 with 0.5, jitter 8, scale 0.9-1.1, rotate -10..10 degrees, jitter 4.
``Scale`` and ``Rotate`` keep the size (they resample about the centre, edges clamped) where lucent's scale
changes it: programs need static shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxdream.errors import OptionError

Array = jax.Array


@dataclass(frozen=True)
class Pad:
    """A border of ``pixels`` on every side, filled with ``value``."""

    pixels: int
    value: float = 0.5

    def __call__(self, key: Array, image: Array) -> Array:
        return pad(image, self.pixels, self.value)


@dataclass(frozen=True)
class Jitter:
    """A random crop ``pixels`` smaller on each axis (a shift of 0 .. pixels)."""

    pixels: int

    def __call__(self, key: Array, image: Array) -> Array:
        dy, dx = jax.random.randint(key, (2,), 0, self.pixels + 1)
        return crop(image, dy, dx, image.shape[0] - self.pixels, image.shape[1] - self.pixels)


@dataclass(frozen=True)
class RandomCrop:
    """A random ``size`` x ``size`` crop."""

    size: int

    def __call__(self, key: Array, image: Array) -> Array:
        ky, kx = jax.random.split(key)
        dy = jax.random.randint(ky, (), 0, image.shape[0] - self.size + 1)
        dx = jax.random.randint(kx, (), 0, image.shape[1] - self.size + 1)
        return crop(image, dy, dx, self.size, self.size)


@dataclass(frozen=True)
class Scale:
    """Resampled about the centre by a factor drawn uniformly from [low, high]."""

    low: float
    high: float

    def draw(self, key: Array) -> Array:
        return jax.random.uniform(key, (), minval=self.low, maxval=self.high)

    def __call__(self, key: Array, image: Array) -> Array:
        return affine(image, self.draw(key), 0.0)


@dataclass(frozen=True)
class Rotate:
    """Rotated about the centre by an angle drawn uniformly from [-degrees, degrees]."""

    degrees: float

    def draw(self, key: Array) -> Array:
        """The angle in radians."""
        return jax.random.uniform(key, (), minval=-self.degrees, maxval=self.degrees) * (math.pi / 180.0)

    def __call__(self, key: Array, image: Array) -> Array:
        return affine(image, 1.0, self.draw(key))


@dataclass(frozen=True)
class ZoomCrop:
    """A random square window whose side is a fraction in [low, high] of the image's shorter side, at a random
    place, resampled to ``size`` x ``size`` (bilinear): MACO's crops of a large canvas."""

    low: float
    high: float
    size: int

    def __call__(self, key: Array, image: Array) -> Array:
        k_side, k_y, k_x = jax.random.split(key, 3)
        h, w = image.shape[0], image.shape[1]
        side = jax.random.uniform(k_side, (), minval=self.low, maxval=self.high) * min(h, w)
        top = jax.random.uniform(k_y, ()) * (h - side)
        left = jax.random.uniform(k_x, ()) * (w - side)
        return window(image, top, left, side, self.size)


@dataclass(frozen=True)
class Noise:
    """Gaussian noise of standard deviation ``sd``."""

    sd: float

    def __call__(self, key: Array, image: Array) -> Array:
        return image + self.sd * jax.random.normal(key, image.shape, image.dtype)


Transform = Pad | Jitter | RandomCrop | Scale | Rotate | ZoomCrop | Noise
PRESETS: dict[str, tuple[Transform, ...]] = {
    "standard": (Pad(12, 0.5), Jitter(8), Scale(0.9, 1.1), Rotate(10.0), Jitter(4)),
    # MACO's: a crop of 20-25 % of the canvas's area (45-50 % of its side) seen at 224 px, and noise.
    "maco": (ZoomCrop(0.45, 0.5, 224), Noise(0.05)),
    "none": (),
}


def preset(name: str) -> tuple[Transform, ...]:
    """The named chain (PRESETS)."""
    if name not in PRESETS:
        raise OptionError(f"--transforms {name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name]


def apply(chain: Sequence[Transform], key: Array, image: Array) -> Array:
    """``image`` through each transform of ``chain`` in order, each with its own key from ``key``. A Scale followed
    by a Rotate resamples once, by one affine map of both draws: resampled twice, XLA:CPU fused the first sampling
    into each of the second's four taps (16 gathers a pixel: 0.33 s of a 2 s SqueezeNet step at batch 16)."""
    index = 0
    while index < len(chain):
        transform, after = chain[index], chain[index + 1] if index + 1 < len(chain) else None
        if isinstance(transform, Scale) and isinstance(after, Rotate):
            image = affine(image, transform.draw(jax.random.fold_in(key, index)),
                           after.draw(jax.random.fold_in(key, index + 1)))
            index += 2
            continue
        image = transform(jax.random.fold_in(key, index), image)
        index += 1
    return image


def output_size(chain: Sequence[Transform], height: int, width: int) -> tuple[int, int]:
    """The size an image of height x width has after ``chain``; one clear error where a crop would not fit."""
    for transform in chain:
        if isinstance(transform, Pad):
            height, width = height + 2 * transform.pixels, width + 2 * transform.pixels
        elif isinstance(transform, Jitter):
            height, width = height - transform.pixels, width - transform.pixels
        elif isinstance(transform, RandomCrop):
            if transform.size > min(height, width):
                raise OptionError(f"a random crop of {transform.size} does not fit a {width}x{height} image")
            height = width = transform.size
        elif isinstance(transform, ZoomCrop):
            height = width = transform.size
        if min(height, width) < 1:
            raise OptionError("the transforms crop the image away; render a larger --size")
    return height, width


def pad(image: Array, pixels: int, value: float) -> Array:
    """``image`` with a border of ``pixels`` filled with ``value``."""
    return jnp.pad(image, ((pixels, pixels), (pixels, pixels), (0, 0)), constant_values=value)


def crop(image: Array, top: Array | int, left: Array | int, height: int, width: int) -> Array:
    """The height x width window whose corner is (top, left)."""
    return jax.lax.dynamic_slice(image, (top, left, 0), (height, width, image.shape[2]))


def affine(image: Array, scale: Array | float, angle: Array | float) -> Array:
    """``image`` scaled by ``scale`` and rotated by ``angle`` (radians, counter-clockwise) about its centre, keeping
    its size: each output pixel samples the input bilinearly at its inverse image, edges clamped."""
    h, w = image.shape[0], image.shape[1]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy, jnp.arange(w, dtype=jnp.float32) - cx,
                          indexing="ij")
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return bilinear(image, (cos * yy - sin * xx) / scale + cy, (sin * yy + cos * xx) / scale + cx)


def window(image: Array, top: Array | float, left: Array | float, side: Array | float, size: int) -> Array:
    """The square window of ``side`` pixels at (top, left) of ``image``, sampled bilinearly on a ``size`` x ``size``
    grid (pixel centres), edges clamped."""
    steps = (jnp.arange(size, dtype=jnp.float32) + 0.5) * (side / size) - 0.5
    yy, xx = jnp.meshgrid(top + steps, left + steps, indexing="ij")
    return bilinear(image, yy, xx)


def bilinear(image: Array, source_y: Array, source_x: Array) -> Array:
    """(H, W, C) sampled at the points (source_y, source_x) (any shape) between its four neighbours, edges
    clamped (``map_coordinates(order=1, mode='nearest')``). Why not map_coordinates: it gathers (and, backwards,
    scatters) each colour apart; one gather of whole pixels halves a SqueezeNet batch's transform time on XLA:CPU."""
    h, w, c = image.shape
    top, left = jnp.floor(source_y), jnp.floor(source_x)
    dy, dx = (source_y - top)[..., None], (source_x - left)[..., None]
    rows = [jnp.clip(top + k, 0, h - 1).astype(jnp.int32) * w for k in (0, 1)]
    cols = [jnp.clip(left + k, 0, w - 1).astype(jnp.int32) for k in (0, 1)]
    pixels = image.reshape(h * w, c)
    upper = pixels[rows[0] + cols[0]] * (1 - dx) + pixels[rows[0] + cols[1]] * dx
    lower = pixels[rows[1] + cols[0]] * (1 - dx) + pixels[rows[1] + cols[1]] * dx
    return upper * (1 - dy) + lower * dy
