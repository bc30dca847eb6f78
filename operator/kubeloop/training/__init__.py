"""The trainer entrypoint that runs in a training pod or local subprocess."""
