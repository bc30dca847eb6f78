"""Whether this operator leads, by kopf's peering rule, for kubeloop's own poll.

kopf pauses an operator while its (Cluster)KopfPeering lists a live peer of higher or equal
priority (kopf/_core/engines/peering.py, process_peering_event); kubeloop's poll loop asks
the same question of the same objects, so only the leader polls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubeloop.api.times import parse_time, utc_now
from kubeloop.kube.client import KubeClient, Resource

logger = logging.getLogger("kubeloop.operator")

CLUSTER_PEERINGS = Resource("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False)
PEERINGS = Resource("kopf.dev", "v1", "kopfpeerings")
DEFAULT_LIFETIME_SECONDS = 60


def leads(peers: Mapping[str, Any], identity: str, priority: int, now: datetime) -> bool:
    """Whether `identity` leads among `peers` (a peering's status: identity -> priority,
    lifetime, lastseen): no other live peer has a priority as high; no side effects."""
    for other, info in peers.items():
        if other == identity or not isinstance(info, Mapping):
            continue
        seen = parse_time(str(info.get("lastseen") or "")) or now
        lifetime = timedelta(seconds=int(info.get("lifetime") or DEFAULT_LIFETIME_SECONDS))
        alive = seen + lifetime > now
        if alive and int(info.get("priority") or 0) >= priority:
            return False
    return True


@dataclass(frozen=True)
class Leadership:
    """This operator's place in its peering objects: one cluster-wide, or one per namespace."""

    name: str
    identity: str
    priority: int
    namespaces: tuple[str, ...] = ()
    """Watched namespaces (namespaced KopfPeerings); empty: the ClusterKopfPeering."""

    def leads(self, client: KubeClient) -> bool:
        """Blocking: whether no peering lists a live rival (kopf pauses on any one)."""
        places: list[tuple[Resource, str | None]] = [(PEERINGS, ns) for ns in self.namespaces]
        places = places or [(CLUSTER_PEERINGS, None)]
        now = utc_now()
        for resource, namespace in places:
            found = client.get(resource, namespace, self.name)
            if found is not None and not leads(
                found.get("status") or {}, self.identity, self.priority, now
            ):
                return False
        return True
