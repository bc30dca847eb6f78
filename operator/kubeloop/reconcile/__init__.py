"""Pure reconcile decisions and child builders, shared by the operator and the local mode."""
