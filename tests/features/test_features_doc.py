"""docs/features.md stays true: every YAML example loads, every key and kind is documented."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from headwater.features.engine import FeatureEngine
from headwater.features.spec import KINDS, FeatureSpec, load_features

DOC = Path(__file__).resolve().parents[2] / "docs" / "features.md"


def test_every_yaml_example_is_a_features_file_headwater_accepts(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= len(KINDS) + 1
    kinds_shown = set()
    for n, block in enumerate(blocks):
        path = tmp_path / f"example-{n}.yaml"
        path.write_text(block, encoding="utf-8")
        specs = load_features(path)
        FeatureEngine(specs)  # compiles into the pass
        kinds_shown.update(s.kind for s in specs)
    assert kinds_shown == set(KINDS)


def test_every_key_and_kind_has_its_place_in_the_doc() -> None:
    text = DOC.read_text(encoding="utf-8")
    table_keys = set(re.findall(r"^\| `(\w+)` \|", text, re.MULTILINE))
    spec_keys = {f.name for f in msgspec.structs.fields(FeatureSpec)}
    # ``windows`` and ``window`` are the file's duration forms of windows_s and window_s.
    assert spec_keys | {"windows", "window"} <= table_keys
    for kind in KINDS:
        assert f"### `{kind}`" in text, kind
