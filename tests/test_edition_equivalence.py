"""The student edition's visible checks behave exactly as the full grader's.

For every chapter, the reference values of the visible checks are recorded as a student edition
records them; then every CORRECT and BUGGY variant of tests/ runs through the visible check twice,
once against the live references and once against the recorded values only. Both must pass or
fail alike, with the same feedback (so the same named cause).
"""

import importlib
import traceback

import pytest

from grader import wire
from grader.edition import record_chapter
from grader.feedback import Mismatch
from grader.registry import chapter_ids, get_chapter, topic
from grader.remote import local_remote
from grader.runner import LiveRefs, NotRecorded, RecordedRefs, run_check

CHAPTERS = chapter_ids()
_TABLES: dict = {}


def recorded(cid):
    if cid not in _TABLES:
        _TABLES[cid] = RecordedRefs({k: wire.dumps(v) for k, v in record_chapter(cid).items()})
    return _TABLES[cid]


def outcome(cid, name, answer, refs):
    chapter = get_chapter(cid)
    remote = local_remote({"answer": answer})
    try:
        v = run_check(chapter.exercises[name], remote.global_("answer"), hidden=False,
                      remote_=remote, refs=refs)
        return ("pass" if v.score else "not implemented", v.checks)
    except Mismatch as exc:
        return ("fail", str(exc))
    except NotRecorded as exc:
        return ("not recorded", str(exc))
    except Exception as exc:  # noqa: BLE001 - reported as a difference
        return ("error", "".join(traceback.format_exception_only(exc)))


def variants(cid):
    m = importlib.import_module(f"tests.test_{topic(cid)}")
    return [(v[0], v[1]) for v in m.CORRECT] + [(v[0], v[1]) for v in m.BUGGY]


@pytest.mark.parametrize("cid", CHAPTERS)
def test_edition_visible_checks_match_the_full_grader(cid):
    chapter = get_chapter(cid)
    if not any(e.visible for e in chapter.exercises.values()):
        pytest.skip(f"{cid} has no split visible checks yet")
    refs_live, refs_rec = LiveRefs(chapter.references), recorded(cid)
    differences = []
    for name, answer in variants(cid):
        if chapter.exercises[name].visible is None:
            continue
        live = outcome(cid, name, answer, refs_live)
        rec = outcome(cid, name, answer, refs_rec)
        if live != rec:
            differences.append(f"{name} ({getattr(answer, '__name__', answer)}):\n"
                               f"  full grader: {live}\n  edition:     {rec}")
    assert not differences, "\n".join(differences)
