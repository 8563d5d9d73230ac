"""jaxdream: Darknet's nightmare, faithful and compiled, in JAX. See DESIGN.md for the public API.

The names below are imported on first use, so ``import jaxdream`` (and the command line's ``--help``) does not
pay for JAX until something needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "DreamConfig": "jaxdream.dream", "ProgramCache": "jaxdream.dream", "RunStats": "jaxdream.dream",
    "deepdream": "jaxdream.dream", "lucid": "jaxdream.dream", "nightmare": "jaxdream.dream",
    "program_cache": "jaxdream.dream", "reconstruct": "jaxdream.dream", "top_classes": "jaxdream.dream",
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
