"""Option validators shared by every caller (library, command line, batch jobs): each returns the value or raises one
error naming the option and what it must be."""

from __future__ import annotations

import math

import numpy as np

from jaxdream.errors import OptionError

MAX_SEED = 2**32 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_number(name: str, value: float, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a float if it is finite (and above ``minimum``), else one error naming the option."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"--{name} {value!r} is not a number") from None
    if not math.isfinite(value):
        raise OptionError(f"--{name} {value} is not a finite number")
    if abs(value) > FLOAT32_MAX:  # the programs compute in float32, where it would become infinite
        raise OptionError(f"--{name} {value} is too large (at most {FLOAT32_MAX:.3g} in size)")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise OptionError(f"--{name} {value} must be {'greater than' if strict else 'at least'} {minimum}")
    return value


# Upper bounds far beyond any real use, so that a typo cannot ask for exabytes (a schedule of 1e20 rows, a layer
# range of 1e20 entries) before anything else notices.
COUNT_LIMITS = {"layer": 100_000, "range": 1024, "iters": 10_000_000, "octaves": 64, "rounds": 1_000_000,
                "smooth": 1024, "batch-size": 65_536, "prefetch": 64}


def check_count(name: str, value: int, minimum: int) -> int:
    """``value`` if it is a whole number of at least ``minimum`` (and at most COUNT_LIMITS[name]), else one error
    naming the option."""
    maximum = COUNT_LIMITS.get(name)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise OptionError(f"--{name} {value!r} must be a whole number of at least {minimum}")
    if maximum is not None and value > maximum:
        raise OptionError(f"--{name} {value} is more than jaxdream allows ({maximum:,})")
    return int(value)


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= MAX_SEED:
        raise OptionError(f"--seed {seed!r} must be a whole number from 0 to {MAX_SEED}")
    return int(seed)
