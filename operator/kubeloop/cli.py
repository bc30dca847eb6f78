"""The `kubeloop` command."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

from kubeloop import __version__, api, manifests
from kubeloop.api import crd, validation


def main(argv: Sequence[str] | None = None) -> int:
    """Run the kubeloop command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    code: int = args.run(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubeloop", description="Human-in-the-loop continual learning on Kubernetes."
    )
    parser.add_argument("--version", action="version", version=f"kubeloop {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    crds = commands.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument(
        "--dir",
        type=Path,
        action="append",
        dest="dirs",
        help="output directory, repeatable (default: crds and helm/kubeloop/crds)",
    )
    crds.add_argument(
        "--check", action="store_true", help="exit 1, naming the file, when it differs"
    )
    crds.set_defaults(run=_run_crds)

    check = commands.add_parser("validate", help="check manifests against the CRDs and models")
    check.add_argument("-f", "--filename", type=Path, required=True, help="file or directory")
    check.set_defaults(run=_run_validate)
    return parser


def _run_crds(args: argparse.Namespace) -> int:
    dirs = args.dirs or [Path("crds"), Path("helm/kubeloop/crds")]
    stale = []
    for directory, resource in itertools.product(dirs, api.RESOURCES):
        path = directory / crd.crd_filename(resource)
        text = crd.render_crd(resource)
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    for path in stale:
        print(
            f"{path} differs from the API models in kubeloop.api; run `kubeloop crds` "
            "and commit the result",
            file=sys.stderr,
        )
    return 1 if stale else 0


def _run_validate(args: argparse.Namespace) -> int:
    problems = 0
    for path, manifest in manifests.load(args.filename):
        name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
        errors = validation.manifest_errors(manifest)
        problems += len(errors)
        print(f"{path}: {name} {'invalid' if errors else 'valid'}")
        for error in errors:
            print(f"  {error}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
