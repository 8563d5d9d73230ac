"""Dreaming, in three layers: ``core`` (the pure programs), ``runner`` (the compiled-program cache, the
warm-start ``store`` and the host loop over rounds) and one module per mode (nightmare, deepdream, lucid,
reconstruct)."""

from jaxdream.compiled.cache import ProgramCache, program_cache
from jaxdream.compiled.stats import RunStats
from jaxdream.dream.core import DreamConfig, ReconstructConfig, draw_schedule, round_key
from jaxdream.dream.deepdream_mode import deepdream
from jaxdream.dream.lucid_mode import lucid, top_classes
from jaxdream.dream.nightmare_mode import nightmare
from jaxdream.dream.reconstruct_mode import reconstruct
from jaxdream.dream.seams import octave_size

__all__ = [
    "DreamConfig", "ProgramCache", "ReconstructConfig", "RunStats", "deepdream", "draw_schedule", "lucid",
    "nightmare", "octave_size", "program_cache", "reconstruct", "round_key", "top_classes",
]
