"""The Darknet backend: cfg.py parses, network.py runs, weights.py reads the .weights file, model.py loads."""
