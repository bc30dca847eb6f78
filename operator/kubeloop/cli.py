"""The `kubeloop` command."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from kubeloop import __version__, api, manifests, settings
from kubeloop.api import crd


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

    plugin_commands = commands.add_parser("plugins", help="training plugins").add_subparsers(
        title="commands", metavar="COMMAND"
    )
    listing = plugin_commands.add_parser("list", help="installed plugins and their arguments")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_run_plugins_list)

    operator = commands.add_parser(
        "operator", help="run the Kubernetes operator (kopf) reconciling kubeloop's resources"
    )
    watch = operator.add_mutually_exclusive_group()
    watch.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        default=[],
        help="namespace to watch, repeatable (default: KUBELOOP_NAMESPACES, else all)",
    )
    watch.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces")
    peering = operator.add_mutually_exclusive_group()
    peering.add_argument("--peering", help="kopf peering name for leader election")
    peering.add_argument("--standalone", action="store_true", help="run without peering")
    operator.add_argument("--priority", type=int, help="peering priority (highest leads)")
    operator.add_argument("--liveness", help="health endpoint, e.g. http://0.0.0.0:8081/healthz")
    operator.add_argument("-v", "--verbose", action="store_true", help="log kopf's details")
    operator.set_defaults(run=_run_operator)

    up = commands.add_parser("up", help="run manifests on this machine, no cluster needed")
    up.add_argument("-f", "--filename", type=Path, action="append", required=True)
    up.add_argument("--state-dir", type=Path, help="state directory (default: .kubeloop)")
    up.add_argument(
        "--port", type=int, help="port of the first predictor (default: 8080, else a free one)"
    )
    up.add_argument("--mlflow-port", type=int, help="MLflow's port (default: 5000, else free)")
    up.add_argument("--s3-port", type=int, help="the S3 server's port (default: 8333, else free)")
    up.add_argument(
        "--poll-seconds",
        type=float,
        default=2.0,
        help="seconds between reconciles, fewer when a trainer ends (default: 2)",
    )
    up.set_defaults(run=_run_up)

    down = commands.add_parser("down", help="stop what `kubeloop up` runs in a state directory")
    down.add_argument("--state-dir", type=Path, help="state directory (default: .kubeloop)")
    down.set_defaults(run=_run_down)

    back = commands.add_parser(
        "rollback",
        help="move a ServedModel's alias back to the version its last promotion replaced",
    )
    back.add_argument("name", nargs="?", help="the ServedModel `kubeloop up` runs")
    back.add_argument("-n", "--namespace", default="default", help="its namespace")
    back.add_argument("--state-dir", type=Path, help="state directory (default: .kubeloop)")
    back.add_argument("--model", help="on a cluster: the registered model (spec.registeredModel)")
    back.add_argument("--alias", default="champion", help="on a cluster: spec.alias")
    back.add_argument("--tracking-uri", help="on a cluster: MLflow (KUBELOOP_MLFLOW_TRACKING_URI)")
    back.set_defaults(run=_run_rollback)

    demo = commands.add_parser("demo", help="the whole loop on an example, end to end")
    demo.add_argument("--quick", action="store_true", help="fewer epochs (CI)")
    demo.add_argument(
        "--example",
        choices=("digits", "objects"),
        default="digits",
        help="digits (8x8 grayscale, small CNN) or objects (RGB 32x32, ResNet-18)",
    )
    demo.add_argument(
        "--review",
        action="store_true",
        help="label the new user's images yourself on the review page (the demo waits)",
    )
    demo.add_argument("--json", action="store_true", help="end with the summary as one JSON line")
    demo.add_argument("--state-dir", type=Path, help="state directory (default: .kubeloop)")
    demo.set_defaults(run=_run_demo)
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
    """Every document, valid or not with each problem; exit 2 when a file or document cannot
    be read as a manifest, else 1 when one is invalid."""
    from kubeloop import admission  # loads the plugins, to check their arguments

    unreadable = invalid = 0
    for document in manifests.read(args.filename):
        if isinstance(document, manifests.Unreadable):
            unreadable += 1
            print(f"{document.where}: not a manifest")
            problems = list(document.problems)
        else:
            problems = admission.problems(document.body)
            invalid += bool(problems)
            print(f"{document.where}: {document.title} {'invalid' if problems else 'valid'}")
        for problem in problems:
            print(f"  {problem}")
    return 2 if unreadable else 1 if invalid else 0


def _run_plugins_list(args: argparse.Namespace) -> int:
    from kubeloop import plugins

    infos, broken = [], []
    for name in sorted(plugins.installed()):
        try:
            infos.append(plugins.load(name).info())
        except plugins.PluginError as error:
            broken.append(str(error))
    if args.json:
        print(json.dumps([info.to_json() for info in infos], indent=2))
    else:
        print(plugins.describe(infos))
    for problem in broken:
        print(problem, file=sys.stderr)
    return 1 if broken else 0


def _run_operator(args: argparse.Namespace) -> int:
    from kubeloop import settings
    from kubeloop.kube import client, operator  # kopf and the Kubernetes client load only here

    try:
        # Before operator.run starts the metrics server and logs: a missing cluster is then
        # the one line printed.
        client.KubeClient.from_environment()
    except client.ApiError as error:
        print(f"kubeloop operator: {error.message}", file=sys.stderr)
        return 2
    return operator.run(
        settings.load(),
        namespaces=args.namespaces,
        all_namespaces=args.all_namespaces,
        peering=args.peering,
        standalone=args.standalone,
        liveness=args.liveness,
        priority=args.priority,
        verbose=args.verbose,
    )


def _run_up(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kubeloop.local import lock, services, up

    state_dir = args.state_dir or settings.load().state_dir
    addresses = up.Addresses(args.port, args.mlflow_port, args.s3_port)
    try:
        return up.run(state_dir, args.filename, Console(), args.poll_seconds, addresses)
    except (services.ServiceError, lock.StateBusy, ValueError, OSError) as error:
        print(f"kubeloop up: {error}", file=sys.stderr)
        return 1


def _run_down(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kubeloop.local import lock, up

    try:
        return up.down(args.state_dir or settings.load().state_dir, Console())
    except (lock.StateBusy, OSError) as error:
        print(f"kubeloop down: {error}", file=sys.stderr)
        return 1


def _run_rollback(args: argparse.Namespace) -> int:
    from kubeloop.api.errors import Unavailable
    from kubeloop.api.times import utc_now
    from kubeloop.local import up
    from kubeloop.reconcile import servedmodel
    from kubeloop.registry import Registry

    try:
        if args.model is not None:
            model, alias = args.model, args.alias
            tracking_uri = args.tracking_uri or settings.load().mlflow_tracking_uri
        elif args.name is not None:
            state_dir = args.state_dir or settings.load().state_dir
            model, alias, tracking_uri = up.registry_of(state_dir, args.namespace, args.name)
        else:
            raise ValueError(
                "name the ServedModel `kubeloop up` runs, or give --model (and --alias, "
                "--tracking-uri) for one on a cluster"
            )
        registry = Registry(tracking_uri, retries=1)
        print(servedmodel.rollback(registry, model, alias, utc_now()))
    except (ValueError, Unavailable) as error:
        print(f"kubeloop rollback: {error}", file=sys.stderr)
        return 1
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kubeloop.local import demo, lock, services
    from kubeloop.registry import RegistryUnavailable
    from kubeloop.storage import StorageUnavailable

    state_dir = args.state_dir or settings.load().state_dir
    console = Console(stderr=args.json)
    try:
        options = demo.Options(quick=args.quick, example=args.example, review=args.review)
        summary = demo.run(state_dir, options, console)
    except KeyboardInterrupt:
        console.print("demo interrupted; its state is in " + str(state_dir / "demo"))
        return 130
    except (
        demo.DemoError,
        services.ServiceError,
        lock.StateBusy,
        RegistryUnavailable,
        StorageUnavailable,
        OSError,
    ) as error:
        console.print(f"[red]kubeloop demo failed:[/red] {error}")
        return 1
    if args.json:
        print(json.dumps(summary))
    else:
        console.print_json(data=summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
