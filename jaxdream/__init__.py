"""jaxdream: Darknet's nightmare, faithful and compiled, in JAX. See DESIGN.md for the public API."""

from jaxdream.dream import DreamConfig, RunStats, deepdream, nightmare, reconstruct
from jaxdream.errors import JaxdreamError
from jaxdream.image import load_image, save_image
from jaxdream.lucid_dream import lucid, top_classes
from jaxdream.model import Model, load_model

__all__ = [
    "DreamConfig", "JaxdreamError", "Model", "RunStats", "deepdream", "load_image", "load_model", "lucid", "nightmare",
    "reconstruct", "save_image", "top_classes",
]
