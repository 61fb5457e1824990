"""The author's view of hidden checks: solution notebooks' hidden test cells call
`hidden_check`, which runs the hidden check in that kernel and shows the verdict (CI runs them
with GRADER_STRICT=1). Grading never uses it: `grader.judge` judges in the grader's process.
"""

from __future__ import annotations

import os

from grader.registry import get_chapter
from grader.runner import Verdict, run_check


def hidden_check(chapter_id: str, name: str, answer) -> Verdict:
    """The author's view: run the hidden check in this kernel and show the verdict.

    Solution notebooks call this from their hidden test cells (CI runs them with
    GRADER_STRICT=1, so a reference below full marks fails). It is never trusted for grading:
    `grader.judge` runs hidden checks in the grader's own process.
    """
    from grader.remote import local_remote
    from grader.runner import LiveRefs

    chapter = get_chapter(chapter_id)
    exercise = chapter.exercises[name]
    if answer is None:
        verdict = Verdict(name, 0.0, exercise.points,
                          f"{name}: not defined. Run (and fix) the cell that defines it.")
    else:
        remote = local_remote({"answer": answer})
        verdict = run_check(exercise, remote.global_("answer"), hidden=True, remote_=remote,
                            refs=LiveRefs(chapter.references), salt=0)
    text = f"{verdict.feedback}\nscore: {verdict.score:g} / {verdict.max_score:g}"
    print(text)
    if os.environ.get("GRADER_STRICT") and not verdict.passed:
        raise AssertionError(f"hidden check below full marks:\n{text}")
    return verdict
