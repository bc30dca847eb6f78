"""`python -m kubeloop.training --spec FILE [--result FILE]`: the training pod's command;
`python -m kubeloop.training --standby ORDERS`: the same, started before its TrainingJob
(kubeloop.training.standby).

Its work done, the process runs its exit handlers (logging's and MLflow's flushes among
them) and ends without unloading its modules: tearing torch and MLflow down took ~1.5 s, and
a TrainingJob is not done until its process (its pod) is gone.
"""

import atexit
import os
import sys

if sys.argv[1:2] == ["--standby"]:
    from kubeloop.training import standby

    code = standby.run(sys.argv[1:])
else:
    from kubeloop.training.entrypoint import main

    code = main()
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
