"""jaxdream: Darknet's nightmare, faithful and compiled, in JAX.

The public API: ``load_model``, ``load_image``, ``save_image``, ``nightmare``, ``deepdream``, ``lucid``,
``reconstruct``, ``render``, ``program_cache`` (see ``help(jaxdream.nightmare)`` and the README's "Library"
section). The names are imported on first use, so ``import jaxdream`` (and the command line's ``--help``) does not
pay for JAX until something needs it.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("jaxdream")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_PUBLIC = {
    "DreamConfig": "jaxdream.dream", "ProgramCache": "jaxdream.compiled.cache", "RunStats": "jaxdream.compiled.stats",
    "deepdream": "jaxdream.dream", "lucid": "jaxdream.dream", "nightmare": "jaxdream.dream",
    "program_cache": "jaxdream.compiled.cache", "reconstruct": "jaxdream.dream", "top_classes": "jaxdream.dream",
    "render": "jaxdream.visual.render", "accentuate": "jaxdream.visual.accentuate",
    "JaxdreamError": "jaxdream.errors", "load_image": "jaxdream.image", "save_image": "jaxdream.image",
    "Model": "jaxdream.model", "load_model": "jaxdream.model",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'jaxdream' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
