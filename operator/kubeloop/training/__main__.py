"""`python -m kubeloop.training --spec FILE [--result FILE]`: the training pod's command."""

import sys

from kubeloop.training.entrypoint import main

sys.exit(main())
