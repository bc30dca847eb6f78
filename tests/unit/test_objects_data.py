"""The bundled objects: deterministic RGB 32 x 32 splits, the classes, and the night camera."""

import numpy as np
import pytest

from kubeloop import objects
from kubeloop.api.trainingjob import DatasetSource
from kubeloop.local import demo
from kubeloop.training import datasets


def test_splits_are_deterministic_rgb_images_of_every_class() -> None:
    for name in objects.SPLITS:
        images, labels = objects.load_split(name)
        assert images.shape == (objects.SIZES[name], 3, 32, 32)
        assert images.dtype == np.float32
        assert images.min() >= 0.0
        assert images.max() <= 1.0
        assert set(labels) == set(objects.CLASSES)
    again, _ = objects.draw(objects.SIZES["val"], seed=12)
    assert np.array_equal(again, objects.load_split("val")[0])
    train = {image.tobytes() for image in objects.load_split("train")[0]}
    assert not train & {image.tobytes() for image in objects.load_split("test")[0]}


def test_the_new_user_s_camera_is_dark_and_tinted() -> None:
    images, labels = objects.load_slice("base")
    night, same = objects.load_slice("new-user")
    assert np.array_equal(labels, same)
    assert night.mean() < 0.6 * images.mean()  # low light
    # The colour cast turns hues: red objects come out with relatively more green.
    red = labels == "red-circle"
    ratio = lambda batch: float(batch[red, 1].mean() / batch[red, 0].mean())  # noqa: E731
    assert ratio(night) > ratio(images) + 0.05
    feedback, feedback_labels = objects.new_user_feedback(150, seed=1)
    assert feedback.shape == (150, 3, 32, 32)
    assert len(set(feedback_labels)) == len(objects.CLASSES)
    with pytest.raises(ValueError, match="count must be between"):
        objects.new_user_feedback(10_000)


def test_builtin_objects_provide_both_slices() -> None:
    reference = datasets.load_reference(DatasetSource(name="base", uri="builtin://objects"))
    assert set(reference.slices) == {"base", "new-user"}
    assert len(reference.train) == objects.SIZES["train"]


@pytest.mark.parametrize("name", sorted(demo.EXAMPLES))
def test_each_demo_example_has_its_manifests_and_new_user(name: str) -> None:
    example = demo.EXAMPLES[name]
    documents = demo._manifests(example, demo.Options(quick=True, example=name))
    assert documents["TrainingJob"]["metadata"]["name"] == example.base_job
    assert documents["ServedModel"]["metadata"]["name"] == example.served
    assert documents["FeedbackDataset"]["metadata"]["name"] == example.dataset
    assert documents["TrainingJob"]["spec"]["args"]["epochs"] == example.quick_epochs[0]
    shape = documents["FeedbackDataset"]["spec"]["inputShape"]
    assert tuple(shape) == example.input_shape  # the feedback the demo sends fits
    images, _ = example.new_user(3, 1)
    assert images.shape[1:] == example.input_shape
