"""The review page, `GET /review/DATASET`: one HTML file (review_page.html), no build step and
nothing fetched from elsewhere, that labels the review queue with the keyboard.

It asks for the labeller's name once (kept in the browser), and for a bearer token when the
predictor answers 401. It shows one queued prediction at a time: the image drawn from the
model's input, the top classes with their probabilities (the first preselected), one button
and key per class, the similar past cases (`/v1/similar`), and a progress line
(`/v1/review/DATASET/progress`). A label is sent when the next one is given or after
`undo_seconds`, so Backspace can take the last one back until then.

`?slice=NAME` tags every label with that slice (the demo's `new-user`). With `review.overlap`
above 1 the progress line also shows the labellers' agreement, Fleiss' kappa and gold accuracy
(`/v1/review/DATASET/quality`) and links the disputes; `?adjudicate` turns the page into the
adjudication view: one disputed item at a time with each labeller's vote, and the key given
settles it (`POST /v1/review/DATASET/disputes/ID`).
"""

from __future__ import annotations

import json
from importlib import resources

UNDO_SECONDS = 5
_PAGE = resources.files(__package__).joinpath("review_page.html").read_text(encoding="utf-8")


def render(model: str, dataset: str) -> str:
    """The page for `dataset`, whose predictions model `model` makes."""
    config = json.dumps({"model": model, "dataset": dataset, "undo_seconds": UNDO_SECONDS})
    return _PAGE.replace("__CONFIG__", config.replace("</", "<\\/"))
