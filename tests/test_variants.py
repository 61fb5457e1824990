"""For every chapter: the hidden checks accept correct answers written differently and reject
realistic buggy ones, naming the cause; untouched stubs score zero.

Each chapter's test module (tests/test_<topic>.py) lists its variants: CORRECT as
(name, implementation) and BUGGY as (name, implementation, phrase the feedback must contain).
"""

import importlib

import pytest
import torch

from grader.registry import chapter_ids, get_chapter, module_name
from grader.testing import assert_full_marks, assert_loses_marks, hidden_verdict

MODULES = {cid: importlib.import_module(f"tests.test_{module_name(cid).rsplit('.', 1)[1]}")
           for cid in chapter_ids()}
CORRECT = [(cid, *v) for cid, m in MODULES.items() for v in m.CORRECT]
BUGGY = [(cid, *v) for cid, m in MODULES.items() for v in m.BUGGY]


def ids(variants):
    seen = {}
    out = []
    for cid, name, *_ in variants:
        seen[(cid, name)] = seen.get((cid, name), -1) + 1
        out.append(f"{cid[:2]}-{name}-{seen[(cid, name)]}")
    return out


@pytest.mark.parametrize("cid,name,fn", CORRECT, ids=ids(CORRECT))
def test_correct_variants_get_full_marks(cid, name, fn):
    assert_full_marks(cid, name, fn)


@pytest.mark.parametrize("cid,name,fn,phrase", BUGGY, ids=ids(BUGGY))
def test_buggy_variants_lose_marks(cid, name, fn, phrase):
    assert_loses_marks(cid, name, fn, phrase)


@pytest.mark.parametrize("cid", sorted(MODULES))
def test_every_exercise_has_correct_and_buggy_variants(cid):
    for name in get_chapter(cid).exercises:
        correct = sum(1 for c, n, *_ in CORRECT if (c, n) == (cid, name))
        buggy = sum(1 for c, n, *_ in BUGGY if (c, n) == (cid, name))
        assert correct >= 2, f"{cid}: {name} has {correct} correct variants (want 2 or more)"
        assert buggy >= 2, f"{cid}: {name} has {buggy} buggy variants (want 2 or more)"


def stub(*args, **kwargs):
    raise NotImplementedError()


class Stub(torch.nn.Module, torch.utils.data.Dataset):
    """What nbgrader leaves of a class exercise: its methods raise NotImplementedError."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError()


@pytest.mark.parametrize("cid", sorted(MODULES))
def test_not_implemented_scores_zero(cid):
    for name in get_chapter(cid).exercises:
        v = hidden_verdict(cid, name, Stub if name[0].isupper() else stub)
        assert v.score == 0, f"{cid}: an unimplemented {name} scores {v.score}"
        assert "not implemented" in v.feedback, f"{cid}: {name}: {v.feedback}"
