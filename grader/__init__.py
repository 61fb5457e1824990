"""Autograded deep-learning notebooks: student checks, hidden checks, instructor grading.

Parts: `grader.check` (what notebooks' test cells call), `grader.checks` (visible checks, public),
`grader.chapters` (references and hidden checks, the instructor's), `grader.judge` (grading a
notebook: its kernel observes, the grader judges), `grader.batch` (a class, resumable),
`grader.edition` (the student edition), `grader.assign` (building student notebooks).

`checker`, `budget` and `fast_mode` are imported on first use, so that the command line starts
without loading torch.
"""

__all__ = ["checker", "budget", "fast_mode"]


def __getattr__(name):
    if name == "checker":
        from grader.check import checker

        return checker
    if name in ("budget", "fast_mode"):
        from grader import course

        return getattr(course, name)
    raise AttributeError(f"module 'grader' has no attribute {name!r}")
