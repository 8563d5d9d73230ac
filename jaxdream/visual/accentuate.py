"""Feature accentuation (Hamblin, Fel et al., arXiv 2402.10039): a photo's own rendering, pushed toward an
objective while kept close to the photo in one layer's feature space, so the feature shows where and how it
appears in that photo. The render engine with the photo as the start (its Fourier spectrum, or pixels) and a
regularising term, ``objectives.feature_distance``, whose weight is balanced automatically (``reg='auto'``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from jaxdream import checks
from jaxdream.compiled.placement import as_batch
from jaxdream.errors import OptionError
from jaxdream.objectives import Objective, feature_distance, parse_objective
from jaxdream.visual.render import evaluate, render

if TYPE_CHECKING:
    from jaxdream.protocol import Model


def accentuate(model: Model, image: Any, objective: Objective | str, *, reg_layer: int | str,
               reg: float | str = "auto", steps: int = 128, param: str = "fft", transforms: str = "none",
               **options: Any) -> np.ndarray:
    """The photo ``image`` (H, W, 3) in [0, 1] accentuated toward ``objective`` -> (1, H, W, 3): the render starts
    from the photo and ascends objective + reg * feature_distance(reg_layer, the photo's features). ``reg='auto'``
    makes the penalty worth the objective's value at the photo when the features have moved by their own root
    mean square (so neither term drowns the other whatever their units); a number sets the weight itself.
    ``options`` go to ``render`` (lr, seed, precision, ...)."""
    photo = np.asarray(as_batch(image, images=True)[0], np.float32)
    objective = parse_objective(objective) if isinstance(objective, str) else objective
    layer = model.resolve_layer(reg_layer)
    model.check_layer(layer)
    features = np.asarray(model.forward(photo[None], (layer,))[layer][0], np.float32)
    if reg == "auto":
        value = float(evaluate(model, objective, photo[None])[0])
        energy = float(np.mean(np.square(features)))
        weight = abs(value) / energy if energy > 0 else 0.0
    elif isinstance(reg, str):
        raise OptionError(f"--reg {reg!r}: 'auto' or a weight such as 0.5")
    else:
        weight = checks.check_number("reg", reg, 0.0)
    total = objective + weight * feature_distance(layer, features) if weight else objective
    return render(model, total, param=param, size=photo.shape[:2], steps=steps, transforms=transforms, init=photo,
                  **options)
