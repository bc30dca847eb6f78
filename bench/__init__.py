"""kubeloop's benchmarks: speed against baselines measured in the same run, and learning
efficacy. `python bench/run.py [--quick]` and `python bench/efficacy.py`; see README.md."""
