"""Uncertainty scores of probability rows, vectorised over a whole pool; no side effects.

Every function takes an (N, C) matrix of class probabilities (rows sum to 1) and returns
one float per row. `confidence`, `margin` are high when the model is sure; `least_confidence`,
`ratio` and `entropy` are high when it is not.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.floating]

_TINY = 1e-12  # log(0) guard: 0 * log(_TINY) is still 0


def top_two(probabilities: Floats) -> tuple[Floats, Floats]:
    """Highest and second-highest probability of each row (second is 0 with one class)."""
    p = np.asarray(probabilities)
    if p.shape[1] == 1:
        return p[:, 0], np.zeros(len(p), dtype=p.dtype)
    # A partial sort puts the two largest last in O(N * C), no full sort.
    top = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return top[:, 1], top[:, 0]


def confidence(probabilities: Floats) -> Floats:
    """Probability of the predicted class."""
    maxima: Floats = np.asarray(probabilities).max(axis=1)
    return maxima


def least_confidence(probabilities: Floats) -> Floats:
    """1 - confidence: how much mass lies outside the predicted class."""
    return 1.0 - confidence(probabilities)


def margin(probabilities: Floats) -> Floats:
    """Top probability minus the runner-up: small when two classes compete."""
    first, second = top_two(probabilities)
    return first - second


def ratio(probabilities: Floats) -> Floats:
    """Runner-up over top probability, in [0, 1]: 1 when two classes tie."""
    first, second = top_two(probabilities)
    return second / np.maximum(first, _TINY)


def entropy(probabilities: Floats) -> Floats:
    """Shannon entropy in nats: 0 for a one-hot row, log(C) for a uniform one."""
    p = np.asarray(probabilities)
    nats: Floats = -(p * np.log(np.maximum(p, _TINY))).sum(axis=1)
    return nats


def normalized_entropy(probabilities: Floats) -> Floats:
    """Entropy over its maximum log(C), in [0, 1] whatever the number of classes."""
    return normalized(entropy(probabilities), np.asarray(probabilities).shape[1])


def normalized(nats: Floats, classes: int) -> Floats:
    """Entropies already computed (`entropy`) over their maximum log(classes)."""
    if classes < 2:
        return np.zeros(len(nats))
    scaled: Floats = np.asarray(nats) / np.log(classes)
    return scaled
