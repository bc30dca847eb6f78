"""kubeloop's image-classifier training plugin (entry point `image-classifier`)."""

from kubeloop_image_classifier.plugin import ImageClassifier

__all__ = ["ImageClassifier"]
