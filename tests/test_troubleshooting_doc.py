"""docs/troubleshooting.md explains every reason the pipeline writes on a delivery.

The reasons are read from the source (each ``Verdict(status, reason)``, each ``reason=`` of an
outbox transition, each reason a push hands to one), so a new reason without an explanation
fails here rather than reaching a support desk unexplained.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "troubleshooting.md").read_text()
SOURCES = [
    "klaviyo_consent/services/verdicts.py",
    "klaviyo_consent/services/mirror.py",
    "klaviyo_consent/services/push.py",
    "klaviyo_consent/services/verify.py",
    "klaviyo_consent/services/drift.py",
    "klaviyo_consent/phone.py",
    "klaviyo_consent/services/ledger.py",
]
#: Calls whose argument at this position is a reason: Verdict(status, reason), ...
REASON_ARGUMENT = {"Verdict": 1, "_mark_not_applied": 1, "_defer": 2}


def _stem(node: ast.expr) -> str | None:
    """The constant text a reason starts with (an f-string up to its first placeholder)."""
    if isinstance(node, ast.Subscript):  # f"..."[:2000]
        node = node.value
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def _reasons(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            position = REASON_ARGUMENT.get(name or "")
            if position is not None and len(node.args) > position:
                found.add(_stem(node.args[position]) or "")
            for keyword in node.keywords:
                if keyword.arg == "reason":
                    found.add(_stem(keyword.value) or "")
        if isinstance(node, ast.FunctionDef) and node.name in (
            "sms_unsupported_reason",
            "can_receive",
            "_sticky_reason",
        ):
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and isinstance(ret.value, ast.expr):
                    values = ret.value.elts if isinstance(ret.value, ast.Tuple) else [ret.value]
                    found.update(_stem(v) or "" for v in values)
    return {stem.strip() for stem in found if stem.strip() and len(stem.strip()) > 3}


REASONS = sorted({stem for path in SOURCES for stem in _reasons(path)})


def test_the_reasons_are_found_in_the_source() -> None:
    # A guard on the reader above: it must see the well-known reasons, or it proves nothing.
    assert "SMS is not available in" in REASONS
    assert "unknown: Klaviyo has no such profile" in REASONS
    assert "Will retry:" in REASONS
    assert "Read-back failed:" in REASONS and "profile is suppressed (" in REASONS
    assert len(REASONS) >= 15


@pytest.mark.parametrize("reason", REASONS)
def test_each_reason_is_explained_in_troubleshooting(reason: str) -> None:
    assert reason in DOC, f"docs/troubleshooting.md does not explain {reason!r}"
