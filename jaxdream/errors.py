"""The one exception family users see: every message names the file or option and the fix."""

from __future__ import annotations


class JaxdreamError(Exception):
    """Base of every user-facing failure."""


class CfgError(JaxdreamError):
    """A Darknet .cfg file that cannot be understood."""


class WeightsError(JaxdreamError):
    """A weights file that does not fit its architecture or cannot be read."""


class ImageError(JaxdreamError):
    """An image that cannot be read or written."""


class OptionError(JaxdreamError):
    """A bad option value (layer index, rate, zoom, class name ...)."""


class SizeError(OptionError):
    """An image too small (or large) for the dream's layer, octaves or zoom: an error of that image alone (a batch
    reports it and dreams the rest)."""


class FetchError(JaxdreamError):
    """A download that failed or delivered the wrong bytes."""


class NumericError(ImageError):
    """A result with NaN or infinite values, refused before it is written."""


class Interrupted(BaseException):
    """Ctrl-C, raised where the work can stop cleanly (a BaseException, as KeyboardInterrupt, so that no handler
    of ordinary errors swallows it; not a KeyboardInterrupt, which the CLI framework would turn into exit 1)."""
