"""The embedded runtime behind `kubeloop up`: the loop on one machine, no cluster."""
