"""Student-side checks: what the test cells of a chapter notebook call.

    from grader import checker
    check = checker("01_linear_regression")
    ...
    check("linreg", linreg)

A visible check runs in the student's kernel in well under a second, prints one line when it
passes, and raises `ExerciseFailed` with layered feedback (type -> dtype -> shape -> values,
input/expected/received, likely cause) when it does not. It judges against reference values:
computed by the instructor's references where they are installed (the author's view), or the
values recorded when the student edition was built (what students get). Grading never trusts
this: hidden checks run in the grader's own process (`grader.judge`).
"""

from __future__ import annotations

import contextlib
import signal
import threading

from grader.feedback import Mismatch
from grader.registry import get_chapter
from grader.remote import RemoteFailure, local_remote
from grader.runner import LiveRefs, NotRecorded, RecordedRefs, run_check

TIME_LIMIT = 10  # seconds a visible check may take


class ExerciseFailed(AssertionError):
    """A visible check failed; the message says what and why."""

    def _render_traceback_(self):  # IPython shows this instead of the grader's frames
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class CheckTimeout(ExerciseFailed):
    """A visible check ran longer than TIME_LIMIT seconds."""


def recorded_refs(chapter_id: str) -> RecordedRefs:
    """The reference values recorded for a chapter's visible checks (student edition)."""
    from importlib import resources

    from grader import wire

    path = resources.files("grader") / "recorded" / f"{chapter_id}.wire"
    try:
        data = path.read_bytes()
    except (FileNotFoundError, OSError):
        return RecordedRefs({})
    return RecordedRefs({k: wire.dumps(v) for k, v in wire.loads(data).items()})


@contextlib.contextmanager
def _time_limit(seconds: float, name: str):
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal,
                                                                                "setitimer"):
        yield
        return

    def stop(signum, frame):
        raise CheckTimeout(
            f"{name}: the check was stopped after {seconds:g} s. Your code may loop forever "
            "(a `while` whose condition never changes?) or do far more work than needed.")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def stale_definition(name: str) -> str | None:
    """Why `name` may not be what the student last wrote: the latest cell that defines it
    has a syntax error (so Python kept the previous definition). None when all is well."""
    import ast

    try:
        from IPython import get_ipython

        ip = get_ipython()
    except ImportError:  # pragma: no cover - IPython is part of the environment
        return None
    if ip is None:
        return None
    history = ip.user_ns.get("_ih") or []
    for source in reversed(history[:-1]):  # the last entry is the check cell itself
        if f"def {name}" not in source and f"class {name}" not in source:
            continue
        try:
            ast.parse(ip.transform_cell(source))
        except SyntaxError as exc:
            return (f"the last cell you ran that defines `{name}` has a syntax error (line "
                    f"{exc.lineno}: {exc.msg}), so Python kept the previous `{name}`. Fix that "
                    "cell, run it, then run this check again.")
        return None
    return None


class Checker:
    """The visible checks of one chapter."""

    def __init__(self, chapter_id: str):
        self.chapter = get_chapter(chapter_id)
        self.refs = (LiveRefs(self.chapter.references) if self.chapter.instructor
                     else recorded_refs(chapter_id))

    def __repr__(self) -> str:
        return f"checker({self.chapter.id!r}): {', '.join(self.chapter.exercises)}"

    def __call__(self, name: str, answer):
        __tracebackhide__ = True
        exercise = self.chapter.exercises.get(name)
        if exercise is None:
            raise KeyError(f"{self.chapter.id} has no exercise {name!r}; its exercises are "
                           f"{', '.join(self.chapter.exercises)}")
        stale = stale_definition(name)
        if stale:
            raise ExerciseFailed(f"{name}: {stale}")
        remote = local_remote({"answer": answer})
        try:
            with _time_limit(TIME_LIMIT, name):
                verdict = run_check(exercise, remote.global_("answer"), hidden=False,
                                    remote_=remote, refs=self.refs)
        except Mismatch as failure:
            raise ExerciseFailed(f"{name}: {failure}") from None
        except (NotRecorded, RemoteFailure):
            raise ExerciseFailed(
                f"{name}: this check could not compare your answer with the recorded one (it "
                "differs in a way the visible check cannot judge). Your notebook is still "
                "graded by the hidden checks; compare your code with the exercise's text.") \
                from None
        if verdict.score == 0:
            raise NotImplementedError(
                f"{name} is not implemented yet: replace `raise NotImplementedError()` in its "
                "cell with your code, run that cell, then run this one again.")
        n = verdict.checks
        print(f"{name}: {'the visible check passed' if n == 1 else f'all {n} visible checks passed'}"
              ". Hidden checks run when your notebook is graded.")


def checker(chapter_id: str) -> Checker:
    """The `check` function for the chapter's test cells."""
    return Checker(chapter_id)
