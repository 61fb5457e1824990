"""Autograded deep-learning notebooks: student checks, hidden checks, instructor grading.

Parts: `grader.check` (what notebooks' test cells call), `grader.chapters` (one module per
chapter: reference implementations and checks), `grader.grade` (grading notebooks, in a
kernel and from the command line), `grader.assign` (building student notebooks).
"""

from grader.check import checker
from grader.course import budget, fast_mode

__all__ = ["checker", "budget", "fast_mode"]
