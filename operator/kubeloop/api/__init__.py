"""The custom resources as pydantic models: the schema the CRDs are generated from."""

from kubeloop.api.common import API_VERSION, GROUP, VERSION, Condition
from kubeloop.api.feedbackdataset import FeedbackDataset, FeedbackDatasetSpec
from kubeloop.api.servedmodel import ServedModel, ServedModelSpec
from kubeloop.api.trainingjob import TrainingJob, TrainingJobSpec

RESOURCES = (TrainingJob, FeedbackDataset, ServedModel)

__all__ = [
    "API_VERSION",
    "GROUP",
    "RESOURCES",
    "VERSION",
    "Condition",
    "FeedbackDataset",
    "FeedbackDatasetSpec",
    "ServedModel",
    "ServedModelSpec",
    "TrainingJob",
    "TrainingJobSpec",
]
