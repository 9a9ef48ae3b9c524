"""Speed benchmarks: ratios measured side by side in one process, written to ``results/bench.json``."""
