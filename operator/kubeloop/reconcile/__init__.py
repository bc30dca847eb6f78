"""Pure reconcile decisions and child builders, shared by the operator and the local mode.

Nothing here does I/O: a runtime (kubeloop.kube on Kubernetes, kubeloop.local for
`kubeloop up`) observes the world, calls these, and carries out what they return.

- trainingjob: `decide(status, generation, TrainerState | None, trainer_name, problems, now)`
  -> TrainingJobPlan (status, start_trainer, events); `spec_problems`, `parse_result`,
  TRAINER_COMMAND + `trainer_args()`.
- feedbackdataset: `reconcile(dataset, ports, now)` runs the crash-safe trigger against a
  runtime's FeedbackPorts; its pieces (`count_new`, `decide_trigger`,
  `build_snapshot_manifest`, `build_training_job`, `record_snapshot`) are pure.
- servedmodel: `gate_needed` -> `evaluate_gate` -> `decide_rollout` (alias move, what to
  deploy, events) -> `decide_ready` (Ready from a ServingState); PREDICTOR_COMMAND +
  `predictor_args()`.
- builders / observations: Kubernetes children as dicts, and their status read back into
  TrainerState / ServingState; only the operator uses these.
- common: names, labels, owner references, events, times, merge patches.
"""
