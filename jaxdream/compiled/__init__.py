"""Compiled programs, model-agnostic: the cache keyed without tracing, the disk store (with its trust rules), the
placement of parameters on devices and the run statistics. Knows nothing of models or dreams."""
