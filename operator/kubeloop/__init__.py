"""kubeloop: human-in-the-loop continual learning on Kubernetes."""

__version__ = "0.1.0"
