"""The Keras backend: layers.py parses, network.py runs, weights.py reads the HDF5 arrays, model.py loads."""
