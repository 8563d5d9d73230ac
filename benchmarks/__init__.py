"""jaxdream's benchmark suite (a folder of the source tree, not of the installed package): `python -m benchmarks`
from the repository root, or `jaxdream bench` from a source checkout. suite.py runs the cases (cases.py in this
process, processes.py in fresh ones); report.py writes the JSON, the Markdown table and the chart."""
