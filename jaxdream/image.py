"""Images: load/save with Pillow, and Darknet's image operations in JAX (float32 HWC, values in [0, 1]).

The operations reproduce Darknet's arithmetic (golden README Q10, Q11) rather than textbook resampling:
its bilinear resize is align-corners, separable, with a truncated last row; shifts clamp at the edges.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxdream.errors import ImageError, NumericError
from jaxdream.files import image_bytes, open_user_file, write_atomically
from jaxdream.resample import smooth_resize

Array = jax.Array
MAX_PIXELS = 1 << 28  # refuse absurd sizes (decompression bombs) with a clear error
EXIF_ORIENTATION = 0x0112


def load_image(path: str | Path) -> np.ndarray:
    """Float32 (H, W, 3) RGB in [0, 1] as Darknet computes it (byte / 255 in double, stored as float)."""
    path = Path(path)
    with _opened(path) as im:
        data = _to_rgb8(ImageOps.exif_transpose(im))
    if data.size == 0:
        raise ImageError(f"{path}: the image has no pixels")
    return (data.astype(np.float64) / 255.0).astype(np.float32)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of the image ``load_image`` returns, read from the header without decoding the pixels."""
    path = Path(path)
    with _opened(path) as im:
        width, height = im.size
        if im.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):  # the transposing orientations
            width, height = height, width
    if not width or not height:
        raise ImageError(f"{path}: the image has no pixels")
    return height, width


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """The image open for reading; every way it can fail becomes one ImageError naming the file. Only a regular
    file is opened (a FIFO named like an image would otherwise block the run forever)."""
    if not path.exists() and not path.is_symlink():
        raise ImageError(f"{path}: no such image file")
    fd, _ = open_user_file(path, "the image", ImageError)
    try:
        with os.fdopen(fd, "rb") as handle, Image.open(handle) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"{path}: {im.width}x{im.height} pixels is too large; resize it first")
            yield im
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (JPEG, PNG, BMP, TIFF, WebP ...)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: cannot decode the image ({err}); the file may be truncated or corrupt") from None


def _to_rgb8(im: Image.Image) -> np.ndarray:
    if im.mode == "F":  # 32-bit float gray (TIFF): Pillow's own conversion truncates [0, 1] to zeros
        values = np.asarray(im, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("the float image has NaN or infinite pixels")
        top = next(t for t in (1.0, 255.0, 65535.0, max(values.max(), 1.0)) if values.max() <= t)
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit gray: scale to 8 bits instead of clipping
        wide = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or wide.max() > 255 else 255.0
        gray = np.clip(np.round(wide / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Darknet's save conversion: (unsigned char)(255 * v), truncating, after clamping to [0, 1]."""
    return (255.0 * np.clip(np.asarray(x, np.float32), 0.0, 1.0)).astype(np.uint8)


def save_image(path: str | Path, x: np.ndarray, quality: int = 80) -> Path:
    """Write (H, W, 3) float [0, 1] atomically; the format follows the suffix (JPEG at ``quality``, as Darknet)."""
    return write_atomically(path, encode_image(path, x, quality), "the image", ImageError)


def encode_image(path: str | Path, x: Any, quality: int = 80) -> bytes:
    """The file ``save_image`` writes: (H, W, 3) float [0, 1], encoded as the suffix of ``path`` says. Refuses
    anything else, and NaN or infinite values (a dream that overflowed), before a byte is written."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
           ".webp": "WEBP"}.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: unknown image suffix {path.suffix!r}; use .jpg, .png, .bmp, .tif or .webp")
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] != 3 or not np.issubdtype(x.dtype, np.floating):
        raise ImageError(f"{path}: not written: images are float (H, W, 3) RGB arrays in [0, 1], got {x.dtype} "
                         f"{x.shape}")
    if not np.isfinite(x).all():
        raise NumericError(
            f"{path}: not written: the image has NaN or infinite values; the dream overflowed (check the weights, "
            "the input image, and options such as --thresh, --zoom, --rate or the class weights)"
        )
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    try:
        return image_bytes(Image.fromarray(to_uint8(x), "RGB"), fmt, **options)
    except (OSError, ValueError) as err:  # e.g. JPEG's 65,500-pixel limit
        raise ImageError(f"{path}: cannot encode a {x.shape[1]}x{x.shape[0]} {fmt} ({err}); try --format png") from None


def rounded(product: Array) -> Array:
    """``product`` rounded to float32 on its own, as Darknet's C does (it is built without FMA).

    XLA contracts a multiply and the add after it into one fused multiply-add, which rounds once and lands an
    ulp away. An ulp matters here: the edge-replicated rows of a shifted image make exact ties in max-pool
    windows, and a tie broken the other way moves a patch of the gradient (it made the golden 8-iteration run
    drift by 0.2). The select is an identity (NaN stays NaN) that the compiler cannot fold into the add.
    """
    return jnp.where(product == product, product, jnp.nan)


def _resize_taps(n_in: int, n_out: int, last_second_tap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source index and the two weights per output position of Darknet's resize along one axis."""
    scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
    pos = np.arange(n_out, dtype=np.float32) * scale
    index = pos.astype(np.int64)
    frac = (pos - index.astype(np.float32)).astype(np.float32)
    w0 = (np.float32(1) - frac).astype(np.float32)
    w1 = frac
    if last_second_tap:  # horizontal pass: the last column copies the last input column
        index[-1], w0[-1], w1[-1] = n_in - 1, 1, 0
    else:  # vertical pass: the last row keeps only its first tap (Darknet skips the second)
        w1[-1] = 0
    if n_in == 1:
        index[:], w0[:], w1[:] = 0, 1, 0
    return index, w0, w1


def darknet_resize(x: Array, height: int, width: int, valid: tuple[Array, Array] | None = None) -> Array:
    """Darknet's ``resize_image`` on (..., H, W, C): horizontal pass, then vertical. ``valid`` (on a canvas: one
    image of the batch, its pixels in the top-left corner): (the input's true (h, w), the output's), traced;
    the output is ``height`` x ``width`` with zeros beyond its true size, the same arithmetic as the static
    resize inside it."""
    in_h, in_w = x.shape[-3], x.shape[-2]
    if valid is None:
        if (in_h, in_w) == (height, width):
            return x
        taps_x, taps_y = _resize_taps(in_w, width, True), _resize_taps(in_h, height, False)
        next_x, next_y = np.minimum(taps_x[0] + 1, in_w - 1), np.minimum(taps_y[0] + 1, in_h - 1)
    else:
        (true_h, true_w), (out_h, out_w) = valid
        taps_x, taps_y = _runtime_taps(true_w, out_w, width, True), _runtime_taps(true_h, out_h, height, False)
        next_x, next_y = jnp.minimum(taps_x[0] + 1, true_w - 1), jnp.minimum(taps_y[0] + 1, true_h - 1)
    ix, a, b = taps_x
    part = rounded(a[:, None] * jnp.take(x, ix, axis=-2)) + rounded(b[:, None] * jnp.take(x, next_x, axis=-2))
    iy, a, b = taps_y
    top, bottom = jnp.take(part, iy, axis=-3), jnp.take(part, next_y, axis=-3)
    return rounded(a[:, None, None] * top) + rounded(b[:, None, None] * bottom)


def _runtime_taps(n_in: Array, n_out: Array, canvas: int, last_second_tap: bool) -> tuple[Array, Array, Array]:
    """``_resize_taps`` for traced sizes, over ``canvas`` output positions (both weights 0 beyond ``n_out``): the
    same float32 operations, so the same taps."""
    scale = jnp.where(n_out > 1, (n_in - 1).astype(jnp.float32) / jnp.maximum(n_out - 1, 1).astype(jnp.float32),
                      jnp.float32(0))
    pos = jnp.arange(canvas, dtype=jnp.float32) * scale
    index = pos.astype(jnp.int32)
    frac = pos - index.astype(jnp.float32)
    w0, w1 = jnp.float32(1) - frac, frac
    last = jnp.arange(canvas) == n_out - 1
    if last_second_tap:
        index, w0 = jnp.where(last, n_in - 1, index), jnp.where(last, 1, w0)
    w1 = jnp.where(last, 0, w1)
    single, inside = n_in == 1, jnp.arange(canvas) < n_out
    index = jnp.where(single | ~inside, 0, jnp.minimum(index, n_in - 1))
    w0 = jnp.where(inside, jnp.where(single, 1, w0), 0).astype(jnp.float32)
    w1 = jnp.where(inside & ~single, w1, 0).astype(jnp.float32)
    return index, w0, w1


def shift(x: Array, dx: Array | int, dy: Array | int, valid: Array | None = None) -> Array:
    """Darknet's ``crop_image(im, dx, dy, W, H)``: out[j, i] = x[clamp(j + dy), clamp(i + dx)], clamped to the
    image's true (h, w) ``valid`` on a canvas (beyond it the result is left unspecified)."""
    h, w = (x.shape[-3], x.shape[-2]) if valid is None else (valid[0], valid[1])
    rows = jnp.clip(jnp.arange(x.shape[-3]) + dy, 0, h - 1)
    cols = jnp.clip(jnp.arange(x.shape[-2]) + dx, 0, w - 1)
    return jnp.take(jnp.take(x, rows, axis=-3), cols, axis=-2)


def flip_if(x: Array, flip: Array | bool, width: Array | None = None) -> Array:
    """Mirror left-right where ``flip`` is true (a traced flag keeps one program for both); on a canvas, the
    first ``width`` columns among themselves, zeros beyond."""
    if width is None:
        return jnp.where(flip, jnp.flip(x, axis=-2), x)
    cols = jnp.arange(x.shape[-2])
    mirrored = jnp.take(x, jnp.clip(width - 1 - cols, 0, x.shape[-2] - 1), axis=-2)
    return jnp.where((cols < width)[:, None], jnp.where(flip, mirrored, x), 0)


def zoom(x: Array, factor: float) -> Array:
    """Darknet's between-round zoom: crop the centre ``factor`` times the size (edge-clamped beyond the image),
    resize back; so a factor below 1 zooms in, above 1 out."""
    h, w = x.shape[-3], x.shape[-2]
    left, top = int(w * (1.0 - factor) / 2.0), int(h * (1.0 - factor) / 2.0)
    cw, ch = int(w * factor), int(h * factor)
    rows = np.clip(np.arange(ch) + top, 0, h - 1)
    cols = np.clip(np.arange(cw) + left, 0, w - 1)
    cropped = jnp.take(jnp.take(x, rows, axis=-3), cols, axis=-2)
    return darknet_resize(cropped, h, w)


def rotate(x: Array, radians: float) -> Array:
    """Darknet's ``rotate_image``: about the centre, bilinear, zero outside the image."""
    h, w = x.shape[-3], x.shape[-2]
    cx, cy = np.float32(w / 2.0), np.float32(h / 2.0)
    cos, sin = np.float32(np.cos(radians)), np.float32(np.sin(radians))
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    rx = cos * (xx - cx) - sin * (yy - cy) + cx
    ry = sin * (xx - cx) + cos * (yy - cy) + cy
    ix, iy = np.floor(rx).astype(np.int64), np.floor(ry).astype(np.int64)
    fx, fy = (rx - ix).astype(np.float32), (ry - iy).astype(np.float32)

    def tap(px: np.ndarray, py: np.ndarray) -> Array:
        inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        value = x[..., np.clip(py, 0, h - 1), np.clip(px, 0, w - 1), :]
        return jnp.where(inside[..., None], value, 0.0)

    return (
        ((1 - fy) * (1 - fx))[..., None] * tap(ix, iy) + (fy * (1 - fx))[..., None] * tap(ix, iy + 1)
        + ((1 - fy) * fx)[..., None] * tap(ix + 1, iy) + (fy * fx)[..., None] * tap(ix + 1, iy + 1)
    )


def letterbox(x: Array, height: int, width: int) -> Array:
    """Darknet's ``letterbox_image``: keep the aspect ratio, Darknet resize, gray (0.5) fill."""
    h, w = x.shape[-3], x.shape[-2]
    if np.float32(width) / np.float32(w) < np.float32(height) / np.float32(h):
        new_w, new_h = width, (h * width) // w
    else:
        new_h, new_w = height, (w * height) // h
    resized = darknet_resize(x, new_h, new_w)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas = jnp.full((*x.shape[:-3], height, width, x.shape[-1]), 0.5, x.dtype)
    return canvas.at[..., top : top + new_h, left : left + new_w, :].set(resized)


def short_side_crop(x: Array, height: int, width: int) -> Array:
    """torchvision's ImageNet preset: the short side resized to 256/224 of the crop (``Resize(256)``), then the
    centred ``height`` x ``width`` (``CenterCrop(224)``)."""
    h, w = x.shape[-3], x.shape[-2]
    short = int(min(height, width) * 256 / 224)
    new_h, new_w = (short, max(width, int(short * w / h))) if h <= w else (max(height, int(short * h / w)), short)
    resized = smooth_resize(x, new_h, new_w)
    top, left = round((new_h - height) / 2.0), round((new_w - width) / 2.0)
    return resized[..., top : top + height, left : left + width, :]


def ecosystem_resize(x: Array, height: int, width: int, preset: str) -> Array:
    """A photo brought to a network's input the way the ecosystem of a value preset does it: torchvision's crop for
    'torch'; Pillow's antialiased squash for 'caffe', 'tf' and 'raw' (Keras' and TF's classifiers)."""
    return short_side_crop(x, height, width) if preset == "torch" else smooth_resize(x, height, width)


def ecosystem_resize_note(preset: str, height: int, width: int) -> str:
    """What ``ecosystem_resize`` does for ``preset``, in words (``weights info``, converted files)."""
    if preset == "torch":
        return f"short side to {int(min(height, width) * 256 / 224)}, centre crop {width}x{height} (torchvision)"
    return f"antialiased bilinear squash to {width}x{height} (Pillow/Keras)"
