"""The bundled digits: a deterministic stratified split, slices, and the new user."""

import numpy as np
import pytest

from kubeloop import digits


def test_splits_partition_every_digit_stratified() -> None:
    parts = {name: digits.load_split(name) for name in digits.SPLITS}
    sizes = {name: len(labels) for name, (_, labels) in parts.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["train"] == pytest.approx(0.6 * 1797, abs=10)
    assert sizes["val"] == pytest.approx(0.2 * 1797, abs=10)
    train = {image.tobytes() for image in parts["train"][0]}
    test = {image.tobytes() for image in parts["test"][0]}
    assert not train & test  # sklearn's digits hold no duplicates across the split
    for name, (images, labels) in parts.items():
        assert images.dtype == np.float32
        assert images.shape == (sizes[name], digits.HEIGHT, digits.WIDTH)
        assert images.min() >= 0.0
        assert images.max() <= 1.0
        assert set(labels) == set(digits.CLASSES)
    everything = np.concatenate([labels for _, labels in parts.values()])
    for label in digits.CLASSES:  # each class is split 60/20/20 on its own
        total = int(np.sum(everything == label))
        in_train = int(np.sum(parts["train"][1] == label))
        in_val = int(np.sum(parts["val"][1] == label))
        assert in_train == round(0.6 * total)
        assert in_train + in_val == round(0.8 * total)


def test_split_is_deterministic_and_returns_copies() -> None:
    images, labels = digits.load_split("train")
    images[:] = 0
    again, labels_again = digits.load_split("train")
    assert again.max() == 1.0
    assert (labels == labels_again).all()


def test_new_user_mirrors_left_to_right() -> None:
    images, _ = digits.load_split("val")
    mirrored = digits.new_user(images)
    assert mirrored.shape == images.shape
    assert mirrored.dtype == np.float32
    assert np.array_equal(mirrored[:, :, 0], images[:, :, -1])
    assert np.array_equal(digits.new_user(mirrored), images)
    assert not np.array_equal(mirrored, images)


def test_slices() -> None:
    base_images, base_labels = digits.load_slice("base")
    new_images, new_labels = digits.load_slice("new-user")
    test_images, test_labels = digits.load_split("test")
    assert np.array_equal(base_images, test_images)
    assert np.array_equal(new_images, digits.new_user(test_images))
    assert (base_labels == new_labels).all()
    assert (test_labels == base_labels).all()
    with pytest.raises(ValueError, match="unknown digits slice"):
        digits.load_slice("other")


def test_new_user_feedback_comes_from_the_train_split() -> None:
    images, labels = digits.new_user_feedback(50, seed=3)
    again, _ = digits.new_user_feedback(50, seed=3)
    assert np.array_equal(images, again)
    assert len(labels) == 50
    train = {image.tobytes() for image in digits.load_split("train")[0]}
    assert all(image.tobytes() in train for image in digits.new_user(images))
    with pytest.raises(ValueError, match="count must be"):
        digits.new_user_feedback(5000)
