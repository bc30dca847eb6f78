"""Which envtest tests a session selected, ran and how they ended, for the checks that read
what all of them did (the summary tests, marked SUMMARY_MARKER, which conftest runs last)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SUMMARY_MARKER = "after_envtest"
OUTCOMES = pytest.StashKey[dict[str, str]]()
"""nodeid -> the outcome of each envtest test that ran (passed, failed, skipped, xfailed)."""
DESELECTED = pytest.StashKey[list[str]]()
"""nodeids of envtest tests that -k, -m or --deselect left out."""


def is_envtest(path: Path) -> bool:
    return HERE in path.parents


def record(item: pytest.Item, report: pytest.TestReport) -> None:
    """Keep the test's outcome: its call's, or a failing or skipping setup's or teardown's."""
    if report.when == "call" or report.outcome != "passed":
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        outcomes = item.config.stash[OUTCOMES]
        if outcomes.get(item.nodeid, "passed") == "passed":
            outcomes[item.nodeid] = outcome


def what_did_not_run(session: pytest.Session) -> str:
    """Why what the envtest tests did is incomplete, or "" when every one of them passed
    (or failed as expected: xfail)."""
    config = session.config
    if config.stash[DESELECTED]:
        return f"envtest tests deselected: {_some(config.stash[DESELECTED])}"
    collected = {Path(item.path) for item in session.items if is_envtest(Path(item.path))}
    modules = sorted(p.name for p in HERE.glob("test_*.py") if p not in collected)
    if modules:
        return f"envtest modules not collected: {', '.join(modules)}"
    outcomes = config.stash[OUTCOMES]
    unfinished = [
        f"{item.nodeid} {outcomes.get(item.nodeid, 'did not run')}"
        for item in session.items
        if is_envtest(Path(item.path))
        and not item.get_closest_marker(SUMMARY_MARKER)
        and outcomes.get(item.nodeid) not in ("passed", "xfailed")
    ]
    return f"envtest tests not passed: {_some(unfinished)}" if unfinished else ""


def _some(nodeids: list[str]) -> str:
    shown = ", ".join(nodeids[:3])
    return f"{len(nodeids)} ({shown}{', ...' if len(nodeids) > 3 else ''})"
