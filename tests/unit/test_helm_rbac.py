"""The chart's RBAC grants exactly what the operator uses, in every watch and peering mode.

What the operator uses is derived here, not copied from the chart:

- kubeloop's own calls, by parsing operator/kubeloop/kube/*.py with `ast`. KubeClient's
  methods are read to learn the REST verb each sends for the Resource it is given (GET of a
  named object: get; GET of a collection: list; POST: create; PATCH: patch; DELETE: delete).
  Every call of them through a `.client` is resolved to the Resource constants of
  kube/client.py it can receive: directly, through the parameters of the functions between
  (to their callers), through loop variables (to the lists they iterate) and through
  variables holding an object read with `client.get(RESOURCE, ...)`.
- kopf's calls, by starting `kubeloop operator` with the args and env of the chart's
  Deployment (the image's ENTRYPOINT, cli, kube.operator.run) up to kopf.run, stubbed to
  capture the registry with kubeloop's handlers, kopf's settings, the namespaces and the
  peering. What kopf then does for each is from its source, cited where it is decided.

kubeloop acts only in the namespace of the object it reconciles (its children carry
ownerReferences, which cannot cross namespaces), so its rules belong wherever the operator
watches.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kopf
import prometheus_client
import pytest
import yaml
from kopf._core.engines import peering as kopf_peering  # guess_selectors: kopf's own choice

from kubeloop import cli
from kubeloop.kube import client
from kubeloop.reconcile.common import Owner

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "operator" / "kubeloop" / "kube"
CHART = ROOT / "helm" / "kubeloop"
RELEASE_NAMESPACE = "kubeloop-system"

CLUSTER = "(cluster)"
"""Scope of a grant from a ClusterRoleBinding; otherwise the scope is a namespace."""

Rule = tuple[str, str, str]
"""(API group, resource or resource/subresource, verb)."""

RESOURCES: dict[str, client.Resource] = {
    name: value for name, value in vars(client).items() if isinstance(value, client.Resource)
}
REST_VERBS = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}
VERBS_WATCH = ("list", "watch")
DISCOVERY_METHODS = {"serves"}
"""KubeClient methods that GET discovery documents (/apis/GROUP/VERSION): non-resource URLs
every authenticated client may read (Kubernetes' system:discovery ClusterRole); no rule."""


# --- kubeloop's calls (ast) ---------------------------------------------------------------


class Unresolved(AssertionError):
    """The test cannot tell what a call does: teach it, rather than guess."""


@dataclass(frozen=True)
class Use:
    """One REST verb a KubeClient method sends: on the Resource passed to it (resource None)
    or on a fixed one; on the subresource its parameter `subresource_param` names, if any."""

    verb: str
    resource: str | None = None
    subresource_param: str | None = None


@dataclass
class Module:
    path: Path
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]

    @classmethod
    def parse(cls, path: Path) -> Module:
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        return cls(path, tree, parents)

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"

    def function_of(self, node: ast.AST) -> ast.FunctionDef | None:
        """The innermost function holding `node`."""
        current = self.parents.get(node)
        while current is not None and not isinstance(current, ast.FunctionDef):
            current = self.parents.get(current)
        return current

    def calls(self) -> Iterator[ast.Call]:
        yield from (n for n in ast.walk(self.tree) if isinstance(n, ast.Call))


MODULES = [Module.parse(path) for path in sorted(KUBE.glob("*.py"))]
CLIENT_MODULE = next(m for m in MODULES if m.path.name == "client.py")


def _params(function: ast.FunctionDef, bound_method: bool) -> list[str]:
    names = [a.arg for a in function.args.args]
    return names[1:] if bound_method and names and names[0] == "self" else names


def _bind(call: ast.Call, params: list[str]) -> dict[str, ast.expr]:
    bound = dict(zip(params, call.args, strict=False))
    bound.update({k.arg: k.value for k in call.keywords if k.arg is not None})
    return bound


def _client_methods() -> dict[str, ast.FunctionDef]:
    (kube_client,) = [
        n for n in CLIENT_MODULE.tree.body if isinstance(n, ast.ClassDef) and n.name == "KubeClient"
    ]
    return {
        f.name: f
        for f in kube_client.body
        if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")
    }


METHODS = _client_methods()


def client_uses() -> dict[str, list[Use]]:
    """What each public KubeClient method sends, read from its `self._call(...)`s."""
    uses: dict[str, list[Use]] = {}

    def of(name: str) -> list[Use]:
        if name in uses:
            return uses[name]
        method = METHODS[name]
        params = _params(method, bound_method=True)
        found: list[Use] = []
        for call in (n for n in ast.walk(method) if isinstance(n, ast.Call)):
            func = call.func
            if not (isinstance(func, ast.Attribute) and _is_name(func.value, "self")):
                continue
            if func.attr == "_call":
                http, path = ast.literal_eval(call.args[0]), call.args[1]
                if not (
                    isinstance(path, ast.Call)
                    and isinstance(path.func, ast.Attribute)
                    and path.func.attr == "path"
                    and isinstance(path.func.value, ast.Name)
                    and path.func.value.id in params
                ):
                    if name not in DISCOVERY_METHODS:
                        raise Unresolved(
                            f"{CLIENT_MODULE.where(call)}: KubeClient.{name} sends {http} to "
                            f"{ast.unparse(path)}, not a Resource's path"
                        )
                    continue
                named = len(path.args) >= 2 and not _is_none(path.args[1])
                verb = REST_VERBS.get(http) or ("get" if named else "list")
                sub = path.args[2] if len(path.args) >= 3 else None
                found.append(Use(verb, None, sub.id if isinstance(sub, ast.Name) else None))
            elif func.attr in METHODS:
                resource = _bind(call, _params(METHODS[func.attr], bound_method=True))["resource"]
                if not (isinstance(resource, ast.Name) and resource.id in RESOURCES):
                    raise Unresolved(f"{CLIENT_MODULE.where(call)}: {ast.unparse(call)}")
                found.extend(Use(u.verb, u.resource or resource.id) for u in of(func.attr))
        uses[name] = found
        return found

    for name in METHODS:
        of(name)
    return uses


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _is_client(node: ast.AST) -> bool:
    """`rt.client`, `self._rt.client`, `client`: how kube/ reaches its KubeClient."""
    if isinstance(node, ast.Attribute) and node.attr == "client":
        return not _is_name(node.value, "kubernetes")  # the official client's module
    return _is_name(node, "client")


def client_calls() -> Iterator[tuple[Module, ast.Call]]:
    """Every call of a KubeClient method outside KubeClient itself."""
    for module in MODULES:
        for call in module.calls():
            func = call.func
            if isinstance(func, ast.Attribute) and _is_client(func.value):
                if func.attr not in METHODS:
                    raise Unresolved(f"{module.where(call)}: KubeClient has no {func.attr}")
                yield module, call


def resolve(module: Module, expr: ast.expr, seen: frozenset[tuple[str, str]]) -> set[str]:
    """The Resource constants `expr` can be, as names in kube/client.py."""
    if isinstance(expr, ast.Attribute) and expr.attr in RESOURCES:
        return {expr.attr}  # client.JOBS
    if not isinstance(expr, ast.Name):
        raise Unresolved(f"{module.where(expr)}: cannot tell which Resource {ast.unparse(expr)} is")
    if expr.id in RESOURCES:
        return {expr.id}
    function = module.function_of(expr)
    if function is None:
        raise Unresolved(f"{module.where(expr)}: {expr.id} is not a Resource")
    if expr.id in [a.arg for a in function.args.args]:
        return _from_callers(module, function, expr.id, seen)
    for node in ast.walk(function):
        if isinstance(node, ast.For) and expr.id in _bound_names(node.target):
            found = _resources_named_in(node.iter, function)
            if found:
                return found
        if isinstance(node, ast.Assign) and any(expr.id in _bound_names(t) for t in node.targets):
            value = node.value
            # An object read with client.get(RESOURCE, ...) is a RESOURCE.
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute)
                and _is_client(value.func.value)
                and value.func.attr == "get"
            ):
                return resolve(module, value.args[0], seen)
    raise Unresolved(f"{module.where(expr)}: cannot tell which Resource {expr.id} is")


def _bound_names(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _resources_named_in(iterated: ast.expr, function: ast.FunctionDef) -> set[str]:
    """Resource constants in a loop's iterable, or in what is assigned to it when a name."""
    sources: list[ast.AST] = [iterated]
    if isinstance(iterated, ast.Name):
        sources += [
            n.value
            for n in ast.walk(function)
            if isinstance(n, ast.Assign) and any(_is_name(t, iterated.id) for t in n.targets)
        ]
    return {
        n.id
        for source in sources
        for n in ast.walk(source)
        if isinstance(n, ast.Name) and n.id in RESOURCES
    }


def _from_callers(
    module: Module, function: ast.FunctionDef, param: str, seen: frozenset[tuple[str, str]]
) -> set[str]:
    """What `function`'s callers pass as `param`: by name in its module, as a method anywhere."""
    key = (function.name, param)
    if key in seen:
        return set()
    found: set[str] = set()
    callers = 0
    for caller in MODULES:
        for call in caller.calls():
            func = call.func
            as_method = isinstance(func, ast.Attribute) and func.attr == function.name
            as_function = caller is module and _is_name(func, function.name)
            if not (as_method or as_function):
                continue
            argument = _bind(call, _params(function, bound_method=as_method)).get(param)
            if argument is None:
                continue
            callers += 1
            found |= resolve(caller, argument, seen | {key})
    if not callers:
        raise Unresolved(f"{module.where(function)}: nobody passes {function.name}({param}=...)")
    return found


def _subresource(module: Module, expr: ast.expr | None) -> str | None:
    if expr is None or _is_none(expr):
        return None
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value
    raise Unresolved(f"{module.where(expr)}: cannot tell the subresource {ast.unparse(expr)}")


def _rule(name: str, verb: str, subresource: str | None = None) -> Rule:
    resource = RESOURCES[name]
    plural = f"{resource.plural}/{subresource}" if subresource else resource.plural
    return (resource.group, plural, verb)


def kubeloop_rules() -> set[Rule]:
    """The (group, resource, verb)s of kubeloop's own calls in kube/."""
    uses = client_uses()
    rules: set[Rule] = set()
    for module, call in client_calls():
        method = call.func.attr  # type: ignore[attr-defined]  # client_calls() checked it
        bound = _bind(call, _params(METHODS[method], bound_method=True))
        for use in uses[method]:
            if use.resource is not None:
                names = {use.resource}
            else:
                names = resolve(module, bound["resource"], frozenset())
            param = use.subresource_param
            sub = _subresource(module, bound.get(param)) if param else None
            rules |= {_rule(name, use.verb, sub) for name in names}
    return rules | owner_rules()


def owner_rules() -> set[Rule]:
    """update on <owner>/finalizers for the owners of children the operator creates.

    A child's ownerReference with blockOwnerDeletion is admitted, where the API server
    enforces OwnerReferencesPermissionEnforcement (OpenShift does), only from a client that
    may update the owner's finalizers.
    """
    if not Owner("v1", "Kind", "name", "uid").reference().get("blockOwnerDeletion"):
        return set()
    rules = set()
    for module in MODULES:
        for call in module.calls():
            func = call.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "of"
                and _is_name(func.value, "Owner")
            ):
                owners = resolve(module, call.args[0], frozenset())
                rules |= {_rule(name, "update", "finalizers") for name in owners}
    return rules


# --- kopf's calls (through `kubeloop operator`) -------------------------------------------


@dataclass
class OperatorRun:
    """What `kubeloop operator` hands to kopf.run, as the chart's Deployment starts it."""

    registry: kopf.OperatorRegistry
    settings: kopf.OperatorSettings
    clusterwide: bool
    namespaces: list[str]
    peering_name: str | None
    standalone: bool
    metrics: tuple[int, str]
    liveness: str | None


def start_operator(deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> OperatorRun:
    """Run the image's ENTRYPOINT with the Deployment's args and env, up to kopf.run."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "command" not in container, "the image's ENTRYPOINT starts the operator"
    dockerfile = (ROOT / "images" / "operator" / "Dockerfile").read_text()
    (line,) = [x for x in dockerfile.splitlines() if x.startswith("ENTRYPOINT")]
    entrypoint = json.loads(line.removeprefix("ENTRYPOINT"))
    assert entrypoint[0] == "kubeloop", "the console script of kubeloop.cli:main"

    for name in [n for n in os.environ if n.startswith("KUBELOOP_")]:
        monkeypatch.delenv(name)
    for env in container["env"]:
        monkeypatch.setenv(env["name"], env.get("value", "from-a-secret"))

    captured: dict[str, Any] = {}
    metrics: list[tuple[int, str]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: captured.update(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    monkeypatch.setattr(
        prometheus_client, "start_http_server", lambda port, addr: metrics.append((port, addr))
    )
    monkeypatch.setattr(
        client.KubeClient, "from_environment", classmethod(lambda cls: cls(api=None))
    )
    loggers = [logging.getLogger(n) for n in ("kubeloop", "kopf.objects", "aiohttp.access")]
    levels = [logger.level for logger in loggers]
    try:
        assert cli.main([*entrypoint[1:], *container["args"]]) == 0
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    (served,) = metrics
    return OperatorRun(
        registry=captured["registry"],
        settings=captured["settings"],
        clusterwide=captured["clusterwide"],
        namespaces=list(captured["namespaces"]),
        peering_name=captured["peering_name"],
        standalone=bool(captured["standalone"]),
        metrics=served,
        liveness=captured["liveness_endpoint"],
    )


def _plural(selector: Any) -> str:
    """A kopf Selector's plural (given positionally, kopf keeps it as `any_name`)."""
    return str(selector.plural or selector.any_name)


def _handler_rule_name(selector: Any) -> str:
    """The client.py constant of a handler's resource (kopf's Selector: group, plural)."""
    plural = _plural(selector)
    for name, resource in RESOURCES.items():
        if (resource.group, resource.plural) == (selector.group, plural):
            return name
    raise Unresolved(f"kopf handles {selector}, which kube/client.py does not declare")


def kopf_rules(run: OperatorRun) -> tuple[set[Rule], set[Rule]]:
    """kopf's (namespaced, cluster-scoped) rules for kubeloop's handlers and settings."""
    registry, settings = run.registry, run.settings
    namespaced: set[Rule] = set()
    cluster: set[Rule] = set()
    assert not registry._webhooks.get_all_handlers(), "admission webhooks: add their rules"

    # The handlers' resources, as kopf/_core/reactor/observation.resource_observer finds them:
    # each is listed and watched (queueing.watcher -> clients.fetching.fetch_objs, .watching).
    changing = registry._changing.get_all_handlers()
    spawning = registry._spawning.get_all_handlers()
    for handler in [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
        *spawning,
        *changing,
    ]:
        name = _handler_rule_name(handler.selector)
        namespaced |= {_rule(name, "list"), _rule(name, "watch")}
    # Changing handlers: kopf merge-patches its progress and diff-base (clients.patching).
    # In annotations, as kubeloop configures it; a status storage would patch the status too.
    annotations = (kopf.AnnotationsProgressStorage, kopf.AnnotationsDiffBaseStorage)
    persistence = settings.persistence
    for storage in (persistence.progress_storage, persistence.diffbase_storage):
        assert isinstance(storage, annotations), f"{storage}: add the status rules kopf needs"
    for handler in changing:
        namespaced.add(_rule(_handler_rule_name(handler.selector), "patch"))
        # A non-None result goes to status.<handler id> (kopf/_core/actions/progression.py).
        returns = typing.get_type_hints(handler.fn).get("return")
        assert returns is type(None), f"{handler.id} returns results: kopf patches the status"
    # Timers and daemons: kopf JSON-patches its finalizer in (_core/reactor/processing.py).
    for handler in spawning:
        if handler.requires_finalizer:
            namespaced.add(_rule(_handler_rule_name(handler.selector), "patch"))

    # Events of its own warnings and errors (_core/engines/posting.py -> clients.events).
    if settings.posting.enabled:
        namespaced.add(_rule("EVENTS", "create"))

    # _core/reactor/observation.py: resource_observer watches the CRDs; namespace_observer lists
    # and watches the namespaces when not cluster-wide. Both only when scanning is enabled.
    if not settings.scanning.disabled:
        cluster |= {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in VERBS_WATCH}
        if not run.clusterwide:
            cluster |= {("", "namespaces", v) for v in VERBS_WATCH}

    # Peering (_core/engines/peering.py), unless standalone (without --peering kopf still
    # looks for a peering named settings.peering.name): watched, and keep-alives and cleanups
    # merge-patch it (its status subresource when the CRD has one). kopf uses the kinds it
    # finds served: those whose CRD the chart installs.
    if not run.standalone:
        settings.peering.clusterwide = run.clusterwide  # as kopf.run sets it
        installed = chart_crds()
        (selector,) = [
            s for s in kopf_peering.guess_selectors(settings) if (s.group, _plural(s)) in installed
        ]
        group, plural = str(selector.group), _plural(selector)
        peering = {(group, plural, v) for v in (*VERBS_WATCH, "patch")}
        if "status" in installed[(group, plural)]["subresources"]:
            peering.add((group, f"{plural}/status", "patch"))
        (cluster if run.clusterwide else namespaced).update(peering)
    return namespaced, cluster


def chart_crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(group, plural) -> the served version of each CRD the chart installs."""
    crds = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            (version,) = [v for v in crd["spec"]["versions"] if v.get("served")]
            version.setdefault("subresources", {})
            crds[(crd["spec"]["group"], crd["spec"]["names"]["plural"])] = version
    return crds


# --- the chart's grants -------------------------------------------------------------------


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values, name="kubeloop", namespace=RELEASE_NAMESPACE, is_install=True)
    return [
        d
        for path, text in rendered.items()
        if not path.endswith(".txt")
        for d in yaml.safe_load_all(text)
        if d
    ]


def granted(documents: list[dict[str, Any]], account: str) -> dict[str, set[Rule]]:
    """scope -> the rules bound to the operator's ServiceAccount there."""
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d.get("rules") or []
        for d in documents
        if d["kind"] in ("ClusterRole", "Role")
    }
    scopes: dict[str, set[Rule]] = {}
    for binding in (d for d in documents if d["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": RELEASE_NAMESPACE}
        ]
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role_namespace = namespace if ref["kind"] == "Role" else None
        rules = roles.pop((ref["kind"], role_namespace, ref["name"]))
        scope = CLUSTER if binding["kind"] == "ClusterRoleBinding" else namespace
        for rule in rules:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
            expanded = {
                (g, r, v)
                for g in rule["apiGroups"]
                for r in rule["resources"]
                for v in rule["verbs"]
            }
            assert not any("*" in part for grant in expanded for part in grant), rule
            scopes.setdefault(scope, set()).update(expanded)
    assert roles == {}, f"roles bound to nobody: {sorted(roles)}"
    return scopes


def needed(run: OperatorRun) -> dict[str, set[Rule]]:
    """scope -> the rules the operator started this way needs there."""
    kopf_namespaced, kopf_cluster = kopf_rules(run)
    namespaced = kubeloop_rules() | kopf_namespaced
    if run.clusterwide:
        return {CLUSTER: namespaced | kopf_cluster}
    scopes = {namespace: set(namespaced) for namespace in run.namespaces}
    if kopf_cluster:
        scopes[CLUSTER] = kopf_cluster
    return scopes


# --- tests --------------------------------------------------------------------------------

MODES = {
    "all-namespaces": {},
    "all-namespaces-standalone": {"peering": {"enabled": False}},
    "namespaces": {"watchNamespaces": ["team-a", "team-b"], "serviceAccount": {"name": "robot"}},
    "namespaces-standalone": {"watchNamespaces": ["team-a"], "peering": {"enabled": False}},
}


@pytest.mark.parametrize("values", MODES.values(), ids=MODES.keys())
def test_rbac_grants_what_the_operator_uses_and_nothing_else(
    values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = render(values)
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    run = start_operator(deployment, monkeypatch)
    want, have = needed(run), granted(documents, account)
    assert set(have) == set(want), "scopes (namespaces, or the cluster) differ"
    for scope, rules in want.items():
        missing, unused = sorted(rules - have[scope]), sorted(have[scope] - rules)
        assert (missing, unused) == ([], []), f"{scope}: missing {missing}; never used {unused}"
    # kopf patches a peering object; it must exist where kopf looks for it.
    peerings = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        for d in documents
        if d["apiVersion"].startswith("kopf.dev/")
    }
    if run.standalone:
        assert peerings == set()
    elif run.clusterwide:
        assert peerings == {("ClusterKopfPeering", None, run.peering_name)}
    else:
        assert peerings == {("KopfPeering", n, run.peering_name) for n in run.namespaces}


def test_no_rbac_without_rbac_create() -> None:
    kinds = {d["kind"] for d in render({"rbac": {"create": False}})}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def test_deployment_starts_the_operator_as_the_values_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        "watchNamespaces": ["team-a"],
        "peering": {"name": "loop"},
        "metrics": {"host": "::", "port": 9090, "healthPort": 9091},
    }
    (deployment,) = [d for d in render(values) if d["kind"] == "Deployment"]
    run = start_operator(deployment, monkeypatch)
    assert (run.clusterwide, run.namespaces, run.peering_name) == (False, ["team-a"], "loop")
    assert run.metrics == (9090, "::")
    assert run.liveness == "http://[::]:9091/healthz"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "health": 9091}


def test_derivation_sees_every_resource_the_code_names() -> None:
    """A Resource constant used in kube/ but absent from the derived rules means a call
    this test failed to see."""
    named = {
        node.id
        for module in MODULES
        if module is not CLIENT_MODULE
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Name) and node.id in RESOURCES
    }
    derived = kubeloop_rules()
    for name in named:
        resource = RESOURCES[name]
        assert any(
            (group, plural.split("/")[0]) == (resource.group, resource.plural)
            for group, plural, _ in derived
        ), f"{name} is used in kube/ but no call on it was derived"


def test_only_client_py_talks_to_the_api() -> None:
    for module in MODULES:
        if module is CLIENT_MODULE:
            continue
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names]
                assert not any(n.split(".")[0] == "kubernetes" for n in names), module.where(node)
            if isinstance(node, ast.Attribute) and node.attr == "_call":
                raise AssertionError(f"{module.where(node)}: KubeClient._call outside client.py")
