"""`kubeloop operator`: kopf running kubeloop's handlers, with /metrics and a health probe."""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
from collections.abc import Sequence

import kopf
import prometheus_client

from kubeloop.kube import handlers
from kubeloop.kube.client import KubeClient
from kubeloop.kube.peering import Leadership
from kubeloop.kube.runtime import Runtime
from kubeloop.settings import Settings

logger = logging.getLogger("kubeloop.operator")


def kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    """kopf's settings for kubeloop: its bookkeeping in annotations, not in the status
    (the CRDs' status schemas have no room for it), and Events only for its warnings."""
    configured = kopf.OperatorSettings()
    configured.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubeloop.io")
    configured.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kubeloop.io", key="last-handled-configuration"
    )
    configured.posting.level = logging.WARNING
    return configured


def run(
    settings: Settings,
    namespaces: Sequence[str] = (),
    all_namespaces: bool = False,
    peering: str | None = None,
    standalone: bool = False,
    liveness: str | None = None,
    priority: int | None = None,
    verbose: bool = False,
) -> int:
    """Run the operator until SIGTERM/SIGINT; returns the exit code.

    Watches `namespaces` (default: settings.namespaces), or all namespaces when none are
    given or `all_namespaces` is set. With `peering`, replicas elect a leader through kopf's
    (Cluster)KopfPeering of that name: the one with the highest `priority` (random when not
    given) works, the others pause until its record expires; `standalone` runs without
    peering.
    """
    verbose = verbose or settings.log_level.upper() == "DEBUG"
    kopf.configure(verbose=verbose)
    logging.getLogger("kubeloop").setLevel(settings.log_level.upper())
    if not verbose:
        # kopf logs every handler's success; kubeloop logs what happened to each object.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    watched = list(namespaces) or ([] if all_namespaces else list(settings.namespaces))
    prometheus_client.start_http_server(settings.metrics_port, addr=settings.metrics_host)
    logger.info(
        "kubeloop operator: metrics on %s:%d, watching %s",
        settings.metrics_host,
        settings.metrics_port,
        ", ".join(watched) if watched else "all namespaces",
    )
    if peering is not None and priority is None:
        # kopf pauses every operator that sees a peer of higher *or equal* priority: replicas
        # need distinct priorities so that exactly one (the highest) leads.
        priority = random.SystemRandom().randint(1, 2**31 - 1)
        logger.info("peering %s with priority %d", peering, priority)
    registry = kopf.OperatorRegistry()
    runtime = Runtime.from_settings(settings, KubeClient.from_environment())
    # kopf's peering record of this operator: the pod's name in a cluster, like kopf's own.
    identity = os.environ.get("POD_ID") or f"{socket.gethostname()}/{os.getpid()}"
    identity += f"/{secrets.token_hex(3)}"
    leadership = None
    if peering is not None and not standalone:
        # kopf keeps one ClusterKopfPeering for a cluster-wide operator, else a KopfPeering in
        # each watched namespace: the poll asks the same objects whether this operator leads.
        leadership = Leadership(peering, identity, priority or 0, tuple(watched))
    handlers.register(runtime, registry, handlers.Poller(runtime, watched, leadership))
    kopf.run(
        registry=registry,
        settings=kopf_settings(settings),
        standalone=standalone or None,
        peering_name=peering,
        priority=priority,
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str it does not export
        clusterwide=not watched,
        namespaces=watched,
        liveness_endpoint=liveness,
    )
    return 0
