"""Running a check: cases, calls into student code, reference values, verdicts.

A check opens cases (`with t.case(...)`) and uses the student's object, a `grader.remote.Handle`,
through `t.call`, `t.expect` and the handle's attributes: every use is a request to the observer
where the student's code runs (the grading kernel, or this process). The check itself, the
references and the comparisons run here.

An exercise has a visible part (worked examples, run by a student's `check(...)`) and a hidden
part (run only when grading, on inputs drawn from a seed of the grading run). The visible part
asks for reference values with `t.ref(name, *inputs)` and for what likely mistakes produce with
`t.likely(name, *inputs)`; with the instructor's references installed these are computed, in a
student edition they are the values recorded when the edition was built.

- visible mode stops at the first failing case and raises its feedback;
- hidden mode runs every case, and the score is the weighted fraction of cases passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable

import torch

from grader import cases, remote, wire
from grader.feedback import Mismatch, NotImplementedAnswer, expect_tensor


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


def known_cause(text: str) -> str:
    """A hint for an error message whose cause is well known."""
    text = str(text)
    for pattern, cause in KNOWN_ERRORS.items():
        if pattern in text:
            return f"\n  likely cause: {cause}"
    return ""


class NotRecorded(Exception):
    """A student edition has no recorded reference value for these inputs."""


class LiveRefs:
    """Reference values computed by the instructor's module of the chapter."""

    def __init__(self, module):
        self.module = module

    def ref(self, exercise: str, name: str, args: tuple, kwargs: dict):
        refs = getattr(self.module, "REFERENCES", {})
        fn = refs.get(name) or getattr(self.module, name)
        return fn(*_fresh(args), **_fresh(kwargs))

    def likely(self, exercise: str, name: str, args: tuple, kwargs: dict) -> dict:
        out = {}
        for cause, fn in getattr(self.module, "LIKELY", {}).get(name, {}).items():
            try:
                out[cause] = fn(*_fresh(args), **_fresh(kwargs))
            except Exception:  # noqa: BLE001 - a mistake that does not even run on these inputs
                out[cause] = None
        return out


class RecordingRefs(LiveRefs):
    """Live values, also written to `table` (what a student edition ships)."""

    def __init__(self, module, table: dict):
        super().__init__(module)
        self.table = table

    def _key(self, kind, exercise, name, args, kwargs) -> str:
        return f"{kind}:{exercise}:{name}:{wire.digest([list(args), kwargs])}"

    def ref(self, exercise, name, args, kwargs):
        key = self._key("ref", exercise, name, args, kwargs)
        value = super().ref(exercise, name, args, kwargs)
        self.table[key] = wire.dumps(value)
        return value

    def likely(self, exercise, name, args, kwargs):
        key = self._key("likely", exercise, name, args, kwargs)
        value = super().likely(exercise, name, args, kwargs)
        self.table[key] = wire.dumps(value)
        return value


class RecordedRefs(RecordingRefs):
    """Values recorded when the edition was built, looked up by the inputs' fingerprint."""

    def __init__(self, table: dict):
        self.table = table

    def _get(self, key):
        if key not in self.table:
            raise NotRecorded(key)
        return wire.loads(self.table[key])

    def ref(self, exercise, name, args, kwargs):
        return self._get(self._key("ref", exercise, name, args, kwargs))

    def likely(self, exercise, name, args, kwargs):
        return self._get(self._key("likely", exercise, name, args, kwargs))


def _fresh(x):
    """Copies of tensors (and generators), so a reference cannot change the check's inputs."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone().requires_grad_(x.requires_grad) if x.is_leaf else x.clone()
    if isinstance(x, torch.Generator):
        g = torch.Generator()
        g.set_state(x.get_state())
        return g
    if type(x) is list:
        return [_fresh(v) for v in x]
    if type(x) is tuple:
        return tuple(_fresh(v) for v in x)
    if type(x) is dict:
        return {k: _fresh(v) for k, v in x.items()}
    return x


def _normalise_python(entries) -> list:
    """Forbidden Python places as (module, names or None, label or None)."""
    out = []
    for entry in entries:
        entry = tuple(entry)
        if len(entry) == 2:
            entry = (*entry, None)
        out.append(entry)
    return out


class Tester:
    """Collects the cases of one check."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str, hidden: bool, remote_: remote.Remote | None = None, refs=None,
                 d2l_names: Iterable[str] = (), exercise: str | None = None):
        self.name = name
        self.exercise = exercise or name
        self.hidden = hidden
        self.results: list[tuple[str, float, str | None]] = []
        self.remote = remote_
        self.refs = refs
        self.d2l_names = tuple(d2l_names)

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

    # -- reference values ----------------------------------------------------------------
    def ref(self, name: str, *args, **kwargs):
        """The reference value `name(*args, **kwargs)` (inputs must be the check's own)."""
        if self.refs is None:
            raise NotRecorded(name)
        return self.refs.ref(self.exercise, name, args, kwargs)

    def likely(self, name: str, *args, **kwargs) -> dict:
        """{cause: what that mistake returns on these inputs} for the mistakes of `name`."""
        if self.refs is None:
            return {}
        return self.refs.likely(self.exercise, name, args, kwargs)

    def build(self, kind: str, *args, **kwargs):
        """An input object made where the student's code runs (see grader.observe.builder)."""
        return self.remote.build(kind, *args, **kwargs)

    # -- calls into student code -----------------------------------------------------------
    def guard(self, forbidden: dict | None = None, forbidden_python: Iterable = (),
              may_modify: bool = False) -> dict:
        places = _normalise_python(forbidden_python)
        places.append(("d2l", {self.name, *self.d2l_names}, "d2l"))
        return remote.make_guard(forbidden, places, may_modify=may_modify, return_args=may_modify)

    def call(self, fn: Callable, *args, what: str | None = None, forbidden: dict | None = None,
             forbidden_python: Iterable = (), may_modify: bool = False, **kwargs):
        """Call student code; turn every way it can go wrong into a Mismatch.

        `fn` is a handle (the student's function, class or method) or a local helper that uses
        handles. With `may_modify`, tensors passed in (also inside lists) are updated here to
        what the student's code left in them, and list elements it replaced are replaced.
        """
        what = what or f"{self.name}(...)"
        guard = self.guard(forbidden, forbidden_python, may_modify)
        if isinstance(fn, remote.Handle):
            if not fn.is_callable:
                raise Mismatch(f"{self.name} should be callable, but is {fn!r}.")
            report = fn._remote_report({"op": "call", "fn": fn, "args": list(args),
                                        "kwargs": kwargs, "guard": guard}, what)
            for _index, _path, shape in report.get("modified", []) or []:
                raise Mismatch(f"{what} modified its input in place (it changed an argument of "
                               f"shape {tuple(shape)}); work on new tensors instead.")
            if may_modify:
                _apply_changes(list(args), report)
            return report.get("result")
        if not callable(fn):
            raise Mismatch(f"{self.name} should be callable, but is {fn!r}.")
        with remote.guarded(guard):
            try:
                return fn(*args, **kwargs)
            except (Mismatch, NotImplementedAnswer, remote.RemoteFailure):
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. arithmetic on a wrong result type
                raise Mismatch(f"{what} failed: {type(exc).__name__}: "
                               f"{remote.scrub(str(exc))}") from None

    def expect(self, fn: Callable, inputs: dict, expected: torch.Tensor, *, what: str | None = None,
               likely: dict | None = None, forbidden: dict | None = None, atol: float = 1e-6,
               rtol: float = 1e-5, check_dtype: bool = True):
        """Call `fn(*inputs.values())` and compare with `expected` (see feedback.expect_tensor).

        `likely` maps a cause to what that mistake returns on these inputs (a value, or a
        function of the same inputs); the feedback names the first that matches.
        """
        what = what or f"{self.name}({', '.join(inputs)})"
        got = self.call(fn, *inputs.values(), what=what, forbidden=forbidden)
        fresh = lambda: [v.clone() if isinstance(v, torch.Tensor) else v for v in inputs.values()]
        buggy = {cause: (f if not callable(f) else (lambda f=f: f(*fresh())))
                 for cause, f in (likely or {}).items()}
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


def _apply_changes(args: list, report: dict) -> None:
    """Update the check's own arguments from the observer's copies after the call."""
    after = report.get("args")
    if type(after) is not list or len(after) != len(args):
        return
    replaced = {i: set(js) for i, js in report.get("replaced", []) or []
                if type(i) is int and type(js) is list}
    for i, (mine, theirs) in enumerate(zip(args, after)):
        if isinstance(mine, torch.Tensor):
            remote.write_back(mine, theirs)
        elif type(mine) is list and type(theirs) is list and len(mine) == len(theirs):
            for j, (a, b) in enumerate(zip(mine, theirs)):
                if j in replaced.get(i, ()):
                    mine[j] = b
                elif isinstance(a, torch.Tensor):
                    remote.write_back(a, b)
        elif type(mine) is tuple and type(theirs) is tuple:
            for a, b in zip(mine, theirs):
                remote.write_back(a, b)


def run_check(exercise, answer, *, hidden: bool, remote_: remote.Remote, refs=None,
              salt: int | None = None) -> Verdict:
    """Run an exercise's check on `answer` (a handle). Hidden mode returns a verdict; visible
    mode raises Mismatch on the first failing case and returns a verdict otherwise."""
    name = exercise.name
    t = Tester(name, hidden, remote_, refs, exercise.d2l_names)
    if refs is None and hidden:
        raise RuntimeError("hidden checks need the instructor's references")
    try:
        with torch.random.fork_rng(devices=[]), cases.hidden_salt(salt if hidden else None):
            if exercise.check is not None:
                exercise.check(t, answer)
            else:
                exercise.visible(t, answer)
                if hidden and exercise.hidden is not None:
                    exercise.hidden(t, answer)
    except NotImplementedAnswer:
        return Verdict(name, 0.0, exercise.points,
                       f"{name}: not implemented yet (the code still raises NotImplementedError).")
    except remote.RemoteFailure:
        raise
    except Mismatch:
        if not hidden:
            raise
        t.results.append(("setting up the check", 1.0, "the check could not run this case"))
    except NotRecorded:
        raise
    except Exception as exc:  # a bug in a check must never look like the student's
        if not hidden:
            raise
        return Verdict(name, 0.0, exercise.points,
                       f"{name}: the grader failed while checking ({type(exc).__name__}); "
                       "please report this to your instructor.")
    return t.verdict(exercise.points)
