"""Running a check: cases, calls into student code, forbidden calls, verdicts.

A check is a function `check(t: Tester, answer)` that opens cases (`with t.case(...)`) and calls
the student's object through `t.call`. The same check runs in two modes:

- visible (student side): stops at the first failing case and raises its feedback;
- hidden (grading): runs every case, and the score is the weighted fraction of cases passed.

A check relies only on its own inputs and references and on the object it is handed, so it can
run in a separate process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable

import torch
from torch.overrides import TorchFunctionMode

from grader.feedback import Mismatch, NotImplementedAnswer, expect_tensor, fmt_value

try:  # d2l ships answers to some graded names; calling them earns nothing
    import importlib.util

    _spec = importlib.util.find_spec("d2l")
    D2L_DIR = os.path.dirname(_spec.origin) if _spec and _spec.origin else None
except (ImportError, ValueError):
    D2L_DIR = None

TORCH_DIR = os.path.dirname(torch.__file__)


@dataclasses.dataclass
class Verdict:
    """The result of grading one exercise."""

    name: str
    score: float
    max_score: float
    feedback: str
    checks: int = 0  # how many cases ran

    @property
    def passed(self) -> bool:
        return self.score >= self.max_score - 1e-9

    def to_json(self) -> dict:
        return {"name": self.name, "score": self.score, "max_score": self.max_score,
                "passed": self.passed, "feedback": self.feedback}


class _ForbiddenCalls(TorchFunctionMode):
    """Records torch functions from a forbidden set called while the mode is active."""

    def __init__(self, forbidden: dict):
        super().__init__()
        self.forbidden = forbidden
        self.used: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        label = self.forbidden.get(func)
        if label and label not in self.used:
            self.used.append(label)
        return func(*args, **(kwargs or {}))


class _PythonCalls:
    """A profile hook noting calls of Python functions in forbidden places.

    `places` are (directory, function names or None for any) pairs.
    """

    def __init__(self, places):
        self.places = places
        self.used: list[str] = []

    def __call__(self, frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        for directory, names in self.places:
            if code.co_filename.startswith(directory) and (names is None or code.co_name in names):
                where = os.path.relpath(code.co_filename, os.path.dirname(directory))
                label = f"{code.co_name} (from {where})"
                if label not in self.used:
                    self.used.append(label)


# Error messages whose cause is well known, and what to do about them.
KNOWN_ERRORS = {
    "a leaf Variable that requires grad is being used in an in-place operation":
        "update parameters inside `with torch.no_grad():` (autograd must not record the step)",
    "mat1 and mat2 shapes cannot be multiplied":
        "a matrix product with mismatched shapes; print the shapes, and check for a transpose",
    "expected scalar type":
        "tensors of different dtypes in one operation; create new tensors with dtype=X.dtype",
    "Expected all tensors to be on the same device":
        "create new tensors on the input's device (device=X.device)",
    "for *: 'float' and 'NoneType'":
        "a parameter's .grad is None: it did not take part in the loss that was back-propagated, "
        "or it was created without requires_grad=True",
    "does not require grad and does not have a grad_fn":
        "the tensor was created without requires_grad=True, or detached",
}


def _known_cause(exc: BaseException) -> str:
    text = str(exc)
    for pattern, cause in KNOWN_ERRORS.items():
        if pattern in text:
            return f"\n  likely cause: {cause}"
    return ""


def _student_line(exc: BaseException) -> str:
    """The last line of the traceback that is in the student's notebook code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith((os.path.dirname(__file__), TORCH_DIR))]
    if not frames:
        return ""
    f = frames[-1]
    code = f" `{f.line.strip()}`" if f.line else ""
    return f"\n  in your code, function {f.name}, line {f.lineno}:{code}"


def _snapshot(args) -> list:
    return [(a, a.detach().clone()) for a in args if isinstance(a, torch.Tensor)]


class Tester:
    """Collects the cases of one check."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str, hidden: bool):
        self.name = name
        self.hidden = hidden
        self.results: list[tuple[str, float, str | None]] = []

    @contextlib.contextmanager
    def case(self, title: str, weight: float = 1.0):
        try:
            yield
        except Mismatch as failure:
            self.results.append((title, weight, str(failure)))
            if not self.hidden:
                raise
        else:
            self.results.append((title, weight, None))

    def call(self, fn: Callable, *args, what: str | None = None, forbidden: dict | None = None,
             forbidden_python: Iterable = (), may_modify: bool = False, **kwargs):
        """Call student code; turn every way it can go wrong into a Mismatch."""
        what = what or f"{self.name}(...)"
        if not callable(fn):
            raise Mismatch(f"{self.name} should be callable, but is {fmt_value(fn)}.")
        before = [] if may_modify else _snapshot(list(args) + list(kwargs.values()))
        mode = _ForbiddenCalls(forbidden or {})
        places = list(forbidden_python)
        if D2L_DIR:
            places.append((D2L_DIR, {self.name, *getattr(self, "d2l_names", ())}))
        tracer = _PythonCalls(places)
        previous = sys.getprofile()
        sink = io.StringIO()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stderr(sink), mode:
                warnings.simplefilter("ignore")
                sys.setprofile(tracer)
                try:
                    result = fn(*args, **kwargs)
                finally:
                    sys.setprofile(previous)
        except NotImplementedError as exc:
            raise NotImplementedAnswer(str(exc)) from None
        except Mismatch:
            raise
        except Exception as exc:
            raise Mismatch(f"{what} raised {type(exc).__name__}: {exc}{_student_line(exc)}"
                           f"{_known_cause(exc)}") from None
        if mode.used:
            raise Mismatch(f"{what} calls {', '.join(mode.used)}, which this exercise asks you to "
                           "write from scratch with elementary tensor operations.")
        if tracer.used:
            raise Mismatch(f"{what} calls {', '.join(tracer.used)}; this exercise asks for your "
                           "own implementation, not a library's.")
        for original, copy in before:
            if original.shape != copy.shape or not torch.equal(
                    torch.nan_to_num(original.detach()), torch.nan_to_num(copy)):
                raise Mismatch(f"{what} modified its input in place (it changed an argument of "
                               f"shape {tuple(copy.shape)}); work on new tensors instead.")
        return result

    def expect(self, fn: Callable, inputs: dict, expected: torch.Tensor, *, what: str | None = None,
               likely: dict | None = None, forbidden: dict | None = None, atol: float = 1e-6,
               rtol: float = 1e-5, check_dtype: bool = True):
        """Call `fn(*inputs.values())` and compare with `expected` (see feedback.expect_tensor).

        `likely` maps a cause to a buggy variant taking the same inputs; the feedback names the
        first cause whose output matches what was received.
        """
        what = what or f"{self.name}({', '.join(inputs)})"
        got = self.call(fn, *inputs.values(), what=what, forbidden=forbidden)
        fresh = lambda: [v.clone() if isinstance(v, torch.Tensor) else v for v in inputs.values()]
        buggy = {cause: (lambda f=f: f(*fresh())) for cause, f in (likely or {}).items()}
        expect_tensor(got, expected, what=what, inputs=inputs, likely=buggy, atol=atol,
                      rtol=rtol, check_dtype=check_dtype)
        return got

    def verdict(self, max_score: float) -> Verdict:
        total = sum(w for _, w, _ in self.results) or 1.0
        passed = sum(w for _, w, fail in self.results if fail is None)
        score = round(max_score * passed / total, 2)
        failures = [(title, fail) for title, _, fail in self.results if fail is not None]
        if not failures:
            feedback = f"{self.name}: all {len(self.results)} checks passed."
        else:
            lines = [f"{self.name}: {len(self.results) - len(failures)} of {len(self.results)} "
                     "checks passed."]
            # One cause, said once: the first failing case in full, the others by title.
            by_cause: dict[str, list[str]] = {}
            for title, fail in failures:
                key = next((ln for ln in fail.splitlines() if "likely cause" in ln),
                           fail.splitlines()[0])
                if key in by_cause:
                    by_cause[key].append(title)
                    continue
                by_cause[key] = []
                lines.append(f"- {title}: {fail}")
                lines.append(None)  # placeholder for the titles of the same failure
            out, causes = [], iter(by_cause.values())
            for line in lines:
                if line is None:
                    also = next(causes)
                    if also:
                        shown = ", ".join(also[:4]) + (f" and {len(also) - 4} more"
                                                        if len(also) > 4 else "")
                        out.append(f"  the same problem in: {shown}")
                else:
                    out.append(line)
            lines = out
            feedback = "\n".join(lines)
        return Verdict(self.name, score, max_score, feedback, len(self.results))


def run_check(check: Callable, name: str, answer, max_score: float, hidden: bool,
              d2l_names: Iterable[str] = ()) -> Verdict:
    """Run `check` on `answer`. Hidden mode returns a verdict; visible mode raises Mismatch."""
    t = Tester(name, hidden)
    t.d2l_names = tuple(d2l_names)
    try:
        with torch.random.fork_rng(devices=[]):
            check(t, answer)
    except NotImplementedAnswer:
        return Verdict(name, 0.0, max_score,
                       f"{name}: not implemented yet (the code still raises NotImplementedError).")
    except Mismatch:
        if not hidden:
            raise
        t.results.append(("setting up the check", 1.0, "the check could not run this case"))
    except Exception as exc:  # a bug in a check must never look like the student's
        if not hidden:
            raise
        return Verdict(name, 0.0, max_score,
                       f"{name}: the grader failed while checking ({type(exc).__name__}); "
                       "please report this to your instructor.")
    return t.verdict(max_score)
