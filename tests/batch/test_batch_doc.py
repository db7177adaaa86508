"""docs/features.md's batch section stays true: every ``batch:`` example loads, every key
and kind is documented, and the written-out defaults are the defaults."""

from __future__ import annotations

import re
from pathlib import Path

from headwater.batch import BatchSettings, load_batch_features
from headwater.batch.declared import _COMMON, _KEYS, BATCH_KINDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "features.md"


def _batch_blocks() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    return [b for b in blocks if "\nbatch:" in b]


def test_every_batch_example_loads_and_every_kind_is_shown(tmp_path: Path) -> None:
    shown = set()
    for n, block in enumerate(_batch_blocks()):
        path = tmp_path / f"example-{n}.yaml"
        path.write_text(block, encoding="utf-8")
        features = load_batch_features(path)
        assert features, block
        shown.update(f.kind for f in features)
    assert shown == set(BATCH_KINDS)


def test_the_written_out_defaults_are_the_defaults(tmp_path: Path) -> None:
    (block,) = [b for b in _batch_blocks() if "name: item_covis" in b]
    path = tmp_path / "defaults.yaml"
    path.write_text(block, encoding="utf-8")
    cfg = BatchSettings()
    assert load_batch_features(path) == cfg.features()


def test_every_key_and_kind_has_its_place() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Batch features") : text.index("## Changing the features file")]
    table_keys = set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))
    assert set().union(_COMMON, *_KEYS.values()) <= table_keys
    for kind in BATCH_KINDS:
        assert f"### `{kind}`" in section, kind
