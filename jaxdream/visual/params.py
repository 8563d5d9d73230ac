"""Image parameterisations for rendering: what the optimiser changes, and how it becomes an image in [0, 1].

- ``pixel``: one value per pixel and colour.
- ``fft``: the image's real 2-D Fourier spectrum, each frequency scaled by 1 / max(f, 1 / max(h, w))^decay (times
  sqrt(h * w)), so that equal steps change low frequencies more than high ones (Olah et al., Distill 2017).
- ``maco``: only the spectrum's phase is optimised; its magnitude stays a natural image's (computed from photos,
  ``spectrum_from_photos``; the bundled sample photo's by default), the image standardised before its colours
  (Fel et al., NeurIPS 2023, "MACO").
- ``decorrelate``: the optimised colours live in a decorrelated space, mapped to RGB by the square root of the
  colour covariance (ImageNet's by default, or one computed from photos), normalised to the largest column norm.
- The output range: ``sigmoid`` (the default) or ``clip`` to [0, 1].

Every function here is pure; ``init`` draws each batch item from its own key.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdream.errors import OptionError

Array = jax.Array
PARAMS = ("pixel", "fft", "maco")
RANGES = ("sigmoid", "clip")
# The square root of ImageNet's RGB covariance (rows: R, G, B), as published with the method (Olah et al.).
IMAGENET_COLOUR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
FFT_OUTPUT_SCALE = 4.0  # the spectrum's image is divided by this, so a unit-variance init starts near gray
_SPECTRA: dict[str, np.ndarray] = {}  # maco magnitude spectra by digest (a program's key names the digest)


@dataclass(frozen=True)
class ImageParam:
    """A parameterisation of (height, width) images: ``kind`` (PARAMS), its ``decay`` (fft), whether colours are
    ``decorrelated`` (with ``colour``, a 3x3 square root of a colour covariance) and the output ``range``."""

    kind: str = "fft"
    height: int = 224
    width: int = 224
    decay: float = 1.0
    decorrelate: bool = True
    range: str = "sigmoid"
    colour: tuple[tuple[float, ...], ...] = tuple(map(tuple, IMAGENET_COLOUR_SQRT.tolist()))
    spectrum: str = ""  # maco: the digest of its magnitude spectrum (``register_spectrum``)

    def __post_init__(self) -> None:
        if self.kind not in PARAMS:
            raise OptionError(f"--param {self.kind!r}: use one of {', '.join(PARAMS)}")
        if self.range not in RANGES:
            raise OptionError(f"output range {self.range!r}: use one of {', '.join(RANGES)}")
        if self.height < 1 or self.width < 1:
            raise OptionError(f"--size {self.width}x{self.height}: both sides must be at least 1")
        if not np.isfinite(self.decay) or self.decay < 0:
            raise OptionError(f"decay {self.decay} must be a number of at least 0")

    @property
    def shape(self) -> tuple[int, ...]:
        """One item's parameters: (h, w, 3) pixels, or (3, h, w // 2 + 1, 2) real and imaginary parts."""
        if self.kind == "pixel":
            return self.height, self.width, 3
        if self.kind == "maco":
            return 3, self.height, self.width // 2 + 1
        return 3, self.height, self.width // 2 + 1, 2

    def spectrum_scale(self) -> np.ndarray:
        """(h, w // 2 + 1) the scale of each frequency of the rfft2 spectrum."""
        fy = np.fft.fftfreq(self.height)[:, None]
        fx = np.fft.rfftfreq(self.width)[None, :]
        frequency = np.sqrt(fx * fx + fy * fy)
        scale = 1.0 / np.maximum(frequency, 1.0 / max(self.height, self.width)) ** self.decay
        return (scale * np.sqrt(self.height * self.width)).astype(np.float32)

    def colour_matrix(self) -> np.ndarray:
        """The decorrelated-to-RGB map, normalised by its largest column norm."""
        matrix = np.asarray(self.colour, np.float32)
        return matrix / np.max(np.linalg.norm(matrix, axis=0))

    def to_image(self, theta: Array) -> Array:
        """One item's parameters -> its image (h, w, 3) in [0, 1]."""
        if self.kind == "pixel":
            values = theta
        elif self.kind == "maco":
            spectrum = jnp.asarray(self.magnitude()) * jnp.exp(1j * theta)
            values = jnp.fft.irfft2(spectrum, s=(self.height, self.width)).transpose(1, 2, 0)
            values = (values - jnp.mean(values)) / (jnp.std(values) + 1e-8)
        else:
            spectrum = (theta[..., 0] + 1j * theta[..., 1]) * self.spectrum_scale()
            values = jnp.fft.irfft2(spectrum, s=(self.height, self.width)).transpose(1, 2, 0) / FFT_OUTPUT_SCALE
        if self.decorrelate:  # written out, not a (pixels x 3) @ (3 x 3) product: XLA:CPU ran that as a matrix
            matrix = self.colour_matrix()  # product, ~15 ms a SqueezeNet step at batch 16; this fuses with the rest
            values = jnp.stack([sum(values[..., k] * float(matrix[c, k]) for k in range(3)) for c in range(3)], -1)
        return jax.nn.sigmoid(values) if self.range == "sigmoid" else jnp.clip(values + 0.5, 0.0, 1.0)

    def magnitude(self) -> np.ndarray:
        """maco: the fixed magnitude spectrum (3, h, w // 2 + 1)."""
        if self.spectrum not in _SPECTRA:
            raise OptionError("this maco parameterisation's spectrum was not registered (register_spectrum)")
        return _SPECTRA[self.spectrum]

    def init(self, keys: Array, scale: float = 0.01) -> Array:
        """(batch, *shape) small random parameters (maco: phases uniform in [-pi, pi]), each item from its own key
        of ``keys`` (batch,): never one draw copied to every item."""
        if self.kind == "maco":
            return jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 0), self.shape, jnp.float32,
                                                         -jnp.pi, jnp.pi))(keys)
        return jax.vmap(lambda k: scale * jax.random.normal(jax.random.fold_in(k, 0), self.shape, jnp.float32))(keys)

    def from_image(self, image: np.ndarray) -> np.ndarray:
        """The parameters whose image is ``image`` (h, w, 3) in [0, 1] (values kept inside (0, 1) so the sigmoid's
        inverse is finite): to start from a photo."""
        x = np.clip(np.asarray(image, np.float64), 1e-3, 1 - 1e-3)
        values = np.log(x / (1 - x)) if self.range == "sigmoid" else x - 0.5
        if self.decorrelate:
            values = values @ np.linalg.inv(self.colour_matrix().astype(np.float64)).T
        if self.kind == "pixel":
            return values.astype(np.float32)
        if self.kind == "maco":  # the photo's phase under the fixed magnitude: its layout, not its exact pixels
            return np.angle(np.fft.rfft2(values.transpose(2, 0, 1))).astype(np.float32)
        spectrum = np.fft.rfft2(values.transpose(2, 0, 1) * FFT_OUTPUT_SCALE) / self.spectrum_scale()
        return np.stack([spectrum.real, spectrum.imag], axis=-1).astype(np.float32)


def colour_from_photos(images: Any) -> np.ndarray:
    """The square root (symmetric, by eigendecomposition) of the RGB covariance of ``images`` (N, H, W, 3) or a
    list of (H, W, 3) in [0, 1]: ``render(colour=...)`` for a model trained on other photos than ImageNet's."""
    pixels = np.concatenate([np.asarray(x, np.float64).reshape(-1, 3) for x in images])
    if len(pixels) < 2:
        raise OptionError("a colour covariance needs photos with at least two pixels")
    values, vectors = np.linalg.eigh(np.cov(pixels, rowvar=False))
    if values.min() <= 1e-6 * max(values.max(), 1e-12):
        raise OptionError("these photos have too little colour variation for a colour covariance (gray or one "
                          "colour?); decorrelate with ImageNet's (leave the photos out) or not at all")
    return (vectors * np.sqrt(values)) @ vectors.T


def spectrum_from_photos(images: Any, height: int, width: int, colour: Any = IMAGENET_COLOUR_SQRT) -> np.ndarray:
    """The mean magnitude spectrum (3, height, width // 2 + 1) of photos (H, W, 3) in [0, 1], each resized to
    height x width (Pillow, bilinear) and taken into the decorrelated colour space of ``colour``: MACO's template."""
    from PIL import Image

    matrix = np.asarray(colour, np.float64)
    inverse = np.linalg.inv(matrix / np.max(np.linalg.norm(matrix, axis=0)))
    total = np.zeros((3, height, width // 2 + 1))
    count = 0
    for x in images:
        pixels = np.asarray(Image.fromarray(np.uint8(np.clip(np.asarray(x) * 255, 0, 255))).resize(
            (width, height), Image.BILINEAR), np.float64) / 255.0
        values = (pixels - pixels.mean(axis=(0, 1))) @ inverse.T
        total += np.abs(np.fft.rfft2(values.transpose(2, 0, 1)))
        count += 1
    if not count:
        raise OptionError("a spectrum needs at least one photo")
    return (total / count).astype(np.float32)


def register_spectrum(magnitude: Any) -> str:
    """Keep a maco magnitude spectrum for ``ImageParam(spectrum=...)``; returns its digest."""
    magnitude = np.ascontiguousarray(magnitude, np.float32)
    if magnitude.ndim != 3 or magnitude.shape[0] != 3 or not np.isfinite(magnitude).all() or (magnitude < 0).any():
        raise OptionError(f"a spectrum is (3, height, width // 2 + 1) non-negative magnitudes, got {magnitude.shape}")
    digest = hashlib.sha256(magnitude.tobytes() + str(magnitude.shape).encode()).hexdigest()[:16]
    _SPECTRA[digest] = magnitude
    return digest


def default_spectrum(height: int, width: int, colour: Any = IMAGENET_COLOUR_SQRT) -> np.ndarray:
    """The bundled sample photo's magnitude spectrum at height x width (``jaxdream spectrum`` makes others)."""
    return _sample_spectrum(height, width, tuple(map(tuple, np.asarray(colour, np.float64).tolist())))


@functools.lru_cache(maxsize=8)
def _sample_spectrum(height: int, width: int, colour: tuple[tuple[float, ...], ...]) -> np.ndarray:
    """Computed once per size and colours (an atlas renders many batches of the same size)."""
    from jaxdream.image import load_image
    from jaxdream.weights import SAMPLE_IMAGE

    spectrum = spectrum_from_photos([load_image(SAMPLE_IMAGE)], height, width, colour)
    spectrum.flags.writeable = False
    return spectrum
