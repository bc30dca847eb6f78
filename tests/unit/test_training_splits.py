"""How datasets become training, validation and per-slice evaluation data."""

import numpy as np

from kubeloop import plugins
from kubeloop.training import splits


def _images(count: int, label: str, slice_: str) -> plugins.LabelledImages:
    return plugins.LabelledImages.of(
        np.random.default_rng(count).random((count, 4, 4), dtype=np.float32),
        [label] * count,
        slice_,
    )


def _reference() -> splits.Reference:
    return splits.Reference(
        name="base",
        source="builtin://toy",
        train=_images(30, "a", "base"),
        validation=_images(10, "a", "base"),
        test=_images(12, "a", "base"),
        slices={"base": _images(12, "a", "base"), "mirrored": _images(12, "b", "mirrored")},
    )


def _feedback(count: int = 400) -> splits.Feedback:
    tags = np.array(["mirrored", "left-handed"])[np.arange(count) % 2]
    samples = plugins.LabelledImages(
        np.zeros((count, 4, 4), np.float32), np.full(count, "b", np.str_), tags.astype(np.str_)
    )
    ids = tuple(f"01J{i:023d}" for i in range(count))
    return splits.Feedback("feedback", "s3://b/snap.json", ids, samples, "fd", 3)


def test_feedback_parts_are_stable_and_proportioned() -> None:
    ids = [f"sample-{i}" for i in range(4000)]
    parts = [splits.feedback_part(i) for i in ids]
    assert parts == [splits.feedback_part(i) for i in ids]
    shares = {p: parts.count(p) / len(parts) for p in ("train", "val", "test")}
    assert abs(shares["val"] - 0.1) < 0.02
    assert abs(shares["test"] - 0.1) < 0.02


def test_a_slice_a_reference_provides_is_not_held_out_of_feedback() -> None:
    feedback = _feedback()
    assembled = splits.assemble([_reference()], [feedback], ["base", "mirrored", "left-handed"])
    base, fed = assembled.datasets
    assert (base.feedback, fed.feedback) == (False, True)
    # 'mirrored' comes from the reference, so its feedback trains; 'left-handed' is held out.
    assert assembled.evaluation["mirrored"].labels.tolist() == ["b"] * 12
    held_out = assembled.evaluation["left-handed"]
    assert set(held_out.slices) == {"left-handed"}
    expected_train = sum(
        splits.feedback_part(i) == "train"
        or (splits.feedback_part(i) == "test" and n % 2 == 0)  # mirrored test samples train
        for n, i in enumerate(feedback.ids)
    )
    assert len(fed.train) == expected_train
    assert len(fed.train) + len(fed.validation) + len(held_out) == len(feedback.ids)
    assert assembled.unevaluated == []
    (lineage,) = [item for item in assembled.lineage if item.feedback]
    assert (lineage.generation, lineage.feedback_dataset, lineage.test) == (3, "fd", len(held_out))


def test_a_slice_without_data_is_reported() -> None:
    assembled = splits.assemble([_reference()], [], ["base", "night-shift"])
    assert list(assembled.evaluation) == ["base"]
    assert assembled.unevaluated == ["night-shift"]


def test_without_named_slices_overall_uses_all_test_data() -> None:
    feedback = _feedback(100)
    assembled = splits.assemble([_reference()], [feedback], [])
    held_out = sum(splits.feedback_part(i) == "test" for i in feedback.ids)
    assert list(assembled.evaluation) == [splits.OVERALL]
    assert len(assembled.evaluation[splits.OVERALL]) == 12 + held_out
