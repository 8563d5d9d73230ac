"""jaxdream: Darknet's nightmare, faithful and compiled, in JAX. See DESIGN.md for the public API."""

from jaxdream.dream import DreamConfig, RunStats, nightmare, reconstruct
from jaxdream.errors import JaxdreamError
from jaxdream.image import load_image, save_image
from jaxdream.model import Model, load_model

__all__ = [
    "DreamConfig", "JaxdreamError", "Model", "RunStats", "load_image", "load_model", "nightmare", "reconstruct",
    "save_image",
]
