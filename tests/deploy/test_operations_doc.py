"""docs/operations.md stays true: it names every alert and recording rule shipped, and
every test it cites exists."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from tests.deploy.conftest import rules

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"


def named_in_doc() -> set[str]:
    """Every name in backquotes, ``a{x,y}`` spelled out as ``ax`` and ``ay``."""
    names = set()
    for span in re.findall(r"`([^`]+)`", DOC.read_text(encoding="utf-8")):
        parts = re.split(r"\{([^{}]*,[^{}]*)\}", span)
        choices = [p.split(",") if i % 2 else [p] for i, p in enumerate(parts)]
        names.update("".join(c) for c in itertools.product(*choices))
    return names


def test_every_alert_and_recording_rule_is_documented() -> None:
    named = named_in_doc()
    shipped = {r.get("alert") or r["record"] for r in rules()}
    assert shipped - named == set()


def test_every_test_the_doc_cites_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    cited = set(re.findall(r"`(test_\w+)`", text)) | set(re.findall(r"::(test_\w+)", text))
    files = set(re.findall(r"`(tests/[\w/]+\.py)", text))
    assert cited
    assert files
    for path in files:
        assert (ROOT / path).exists(), path
    defined = {
        name
        for path in files
        for name in re.findall(r"^def (test_\w+)", (ROOT / path).read_text(), re.MULTILINE)
    }
    assert cited - defined == set()
