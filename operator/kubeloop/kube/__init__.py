"""kopf handlers and Kubernetes I/O: the only code that talks to the Kubernetes API."""
