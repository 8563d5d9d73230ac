"""Feature visualisation: images rendered from noise toward an objective (``render``), in a pixel or Fourier
parameterisation with colour decorrelation (``params``), under random transforms (``transforms``)."""
