"""`python -m kubeloop.serving ...`: the predictor image's command (see kubeloop.api.predictor)."""

from __future__ import annotations

import sys


def main() -> int:
    from kubeloop.api import predictor

    config = predictor.parse_command_line(sys.argv[1:])  # --help and usage errors: no kserve
    # Importing kserve parses sys.argv with its own options (and their abbreviations): keep
    # ours away from it.
    sys.argv = sys.argv[:1]
    from kubeloop.serving import server

    return server.serve(config)


if __name__ == "__main__":
    sys.exit(main())
