"""Where programs run: parameters placed once per model and placement; image batches checked and moved to the
programs' device."""

from __future__ import annotations

import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxdream.errors import OptionError

_PLACED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def placed_params(model: Any, images: Any) -> Any:
    """The model's parameters on the device(s), placed once per model and placement: replicated over the images'
    mesh when they are sharded."""
    sharding = getattr(images, "sharding", None)
    mesh = sharding.mesh if isinstance(sharding, NamedSharding) else None
    where = repr(dict(mesh.shape)) + repr(mesh.devices.tolist()) if mesh is not None else "default"
    placed = _PLACED.setdefault(model, {})
    if where not in placed:
        target = NamedSharding(mesh, PartitionSpec()) if mesh is not None else None
        placed[where] = jax.device_put(model.params, target)
    return placed[where]


def default_device() -> jax.Device:
    """Where a program runs when nothing is sharded: JAX's default device (``jax_default_device``), else the
    first."""
    chosen = jax.config.jax_default_device
    if isinstance(chosen, jax.Device):
        return chosen
    return jax.devices(chosen if isinstance(chosen, str) else None)[0]


def as_batch(x: Any, images: bool = False) -> Any:
    """(N, H, W, 3) float32 images from (H, W, 3) or (N, H, W, 3); a JAX array keeps its placement when sharded
    over a mesh, one committed to a single other device is moved to where the programs run (the parameters'
    device), anything else stays on the host until a program takes it.

    ``images``: the input of a dream: values in [0, 1] and finite, checked for JAX arrays too (one small reduction
    on the device; the forward and logits calls skip it, so they do not wait for their input)."""
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise OptionError(f"images must be float arrays with values in [0, 1], got {x.dtype} (divide 8-bit images "
                          "by 255, or read them with load_image)")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise OptionError(f"images must be (H, W, 3) or (N, H, W, 3) RGB arrays, got shape {x.shape}")
    if min(x.shape) < 1:
        raise OptionError(f"images must not be empty, got shape {x.shape}")
    if isinstance(x, np.ndarray) and not np.isfinite(x).all():  # (a device array is checked by the first output)
        raise OptionError("images have NaN or infinite values; they must be in [0, 1]")
    if images:
        # one transfer of three numbers; isfinite, since XLA:CPU's min/max may drop a NaN under some XLA_FLAGS
        xp = jnp if isinstance(x, jax.Array) else np
        low, high, finite = (float(v) for v in np.asarray(xp.stack([xp.min(x), xp.max(x),
                                                                    xp.isfinite(x).all().astype(x.dtype)])))
        if not finite:
            raise OptionError("images have NaN or infinite values; they must be in [0, 1]")
        if low < 0.0 or high > 1.0:
            raise OptionError(f"images must have values in [0, 1], these range over [{low:.4g}, {high:.4g}] (divide "
                              "8-bit values by 255; undo any centring such as x - 0.5)")
    if isinstance(x, jax.Array) and not isinstance(x.sharding, NamedSharding) and len(x.sharding.device_set) == 1:
        device = default_device()
        if x.sharding.device_set != {device}:  # committed elsewhere: the program would refuse the mix of devices
            x = jax.device_put(x, device)
    return x if x.dtype == np.float32 else x.astype(np.float32)
