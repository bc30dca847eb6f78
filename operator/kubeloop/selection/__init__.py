"""Active-learning strategies over prediction pools (pure numpy, no I/O).

`select(strategy, probabilities, embeddings, budget, **options)` is the one entry point;
`strategies` documents what each strategy favours, `scores` holds the uncertainty scores the
predictor also reports.
"""

from kubeloop.selection import scores, strategies
from kubeloop.selection.strategies import EMBEDDING_STRATEGIES, STRATEGIES, select

__all__ = ["EMBEDDING_STRATEGIES", "STRATEGIES", "scores", "select", "strategies"]
