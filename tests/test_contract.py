"""Every name of the exercise contract (CONTRACT.md) is graded in its chapter."""

import pytest

from grader import assign
from grader.registry import chapter_ids, get_chapter


def contract_names() -> dict[str, list[str]]:
    """{chapter: names} from the tables of CONTRACT.md (the repository's exercise contract)."""
    import re

    names: dict[str, list[str]] = {}
    chapter = None
    for line in (assign.ROOT / "CONTRACT.md").read_text().splitlines():
        m = re.match(r"## (\d\d_[a-z0-9_]+) ", line)
        if m:
            chapter = m.group(1)
            continue
        if chapter and line.startswith("| `"):
            first = line.split("|")[1]
            names.setdefault(chapter, []).extend(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)\(", first))
    return names


CONTRACT = contract_names()


def test_contract_document_lists_every_chapter():
    assert set(CONTRACT) >= set(chapter_ids())
    assert "early_stopping" in CONTRACT["04_weight_decay"]
    assert "train_with_validation" in CONTRACT["09_training_pipeline"]


@pytest.mark.parametrize("cid", sorted(CONTRACT))
def test_contract_names_are_graded(cid):
    if cid not in assign.source_chapters():
        pytest.skip(f"{cid} is not written yet")
    assert cid in chapter_ids(), f"{cid} has a notebook but no checks module"
    graded = set(get_chapter(cid).exercises)
    missing = [n for n in CONTRACT[cid] if n not in graded]
    assert not missing, f"{cid} does not grade {missing}"


def test_every_chapter_with_checks_has_a_notebook():
    assert set(chapter_ids()) <= set(assign.source_chapters())
    assert set(chapter_ids()) <= set(CONTRACT)
