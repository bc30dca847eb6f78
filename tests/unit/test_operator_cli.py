"""`kubeloop operator`'s command line, as the Helm chart passes it."""

from __future__ import annotations

import pytest

from kubeloop.cli import _parser


def test_operator_command_line() -> None:
    parser = _parser()
    args = parser.parse_args(["operator", "--namespace=a", "-n", "b", "--peering=kubeloop"])
    assert (args.namespaces, args.peering, args.standalone) == (["a", "b"], "kubeloop", False)
    args = parser.parse_args(["operator", "--all-namespaces", "--standalone"])
    assert (args.all_namespaces, args.standalone) == (True, True)
    for wrong in (["-n", "a", "-A"], ["--peering", "p", "--standalone"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["operator", *wrong])
