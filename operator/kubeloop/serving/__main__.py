"""`python -m kubeloop.serving ...`: the predictor image's command (see serving.config)."""

from __future__ import annotations

import sys


def main() -> int:
    from kubeloop.serving import config

    argv = sys.argv[1:]
    config.parse_args(argv)  # --help and usage errors answer before kserve loads
    # Importing kserve parses sys.argv with its own options (and their abbreviations): keep
    # ours away from it.
    sys.argv = sys.argv[:1]
    from kubeloop.serving import server

    return server.main(argv)


if __name__ == "__main__":
    sys.exit(main())
