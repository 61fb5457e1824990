"""The checking machinery: layered feedback, student-code calls, the student-side API."""

import pytest
import torch

from grader.check import ExerciseFailed, checker
from grader.feedback import Mismatch, expect_tensor, fmt_value
from grader.grade import hidden_check
from grader.remote import local_remote
from grader.runner import Tester

CH = "01_linear_regression"


def test_layers_type_dtype_shape_values():
    e = torch.zeros(3, 2)
    with pytest.raises(Mismatch, match="(?s)should return a torch.Tensor.*no `return`"):
        expect_tensor(None, e, what="f(X)")
    with pytest.raises(Mismatch, match="dtype torch.float64, expected torch.float32"):
        expect_tensor(e.double(), e, what="f(X)")
    with pytest.raises(Mismatch, match=r"shape \(2, 3\), expected \(3, 2\)"):
        expect_tensor(torch.zeros(2, 3), e, what="f(X)")
    with pytest.raises(Mismatch, match=r"broadcasting"):
        expect_tensor(torch.zeros(3, 3), torch.zeros(3), what="f(X)")
    with pytest.raises(Mismatch, match="NaN"):
        expect_tensor(torch.full((3, 2), float("nan")), e + 1, what="f(X)")


def test_generic_causes():
    a = torch.arange(1.0, 10.0).reshape(3, 3)
    for received, phrase in ((a.T, "transpose"), (2 * a, "2 times"), (-a, "sign"),
                             (a + 0.5, "constant 0.5")):
        with pytest.raises(Mismatch, match=phrase):
            expect_tensor(received, a, what="f(X)")


def test_values_show_input_expected_received_and_where():
    a = torch.arange(6.0).reshape(2, 3)
    b = a.clone()
    b[1, 2] = 100
    with pytest.raises(Mismatch) as info:
        expect_tensor(b, a, what="f(X)", inputs={"X": a})
    text = str(info.value)
    assert "input X: float32 (2, 3)" in text and "expected:" in text and "received:" in text
    assert "index (1, 2)" in text


def test_fmt_value_is_short():
    assert len(fmt_value(torch.randn(1000, 1000))) < 300


def student(fn):
    """A student's function behind an in-process observer, as checks see it."""
    remote = local_remote({"f": fn})
    return remote, remote.global_("f")


def test_call_detects_in_place_mutation_forbidden_calls_and_student_errors():
    X = torch.randn(3, 4)
    remote, h = student(lambda X: X.mul_(2))
    t = Tester("f", hidden=True, remote_=remote)
    with pytest.raises(Mismatch, match="modified its input in place"):
        t.call(h, X)
    assert torch.equal(X, X), "the check's own copy is untouched"
    remote, h = student(lambda X: torch.softmax(X, 1))
    with pytest.raises(Mismatch, match="from scratch"):
        Tester("f", hidden=True, remote_=remote).call(h, X, forbidden={torch.softmax: "torch.softmax"})
    remote, h = student(lambda X: X.softmax(1))
    with pytest.raises(Mismatch, match="from scratch"):
        Tester("f", hidden=True, remote_=remote).call(
            h, X, forbidden={torch.Tensor.softmax: "Tensor.softmax"})

    def broken(X):
        return X @ X

    remote, h = student(broken)
    with pytest.raises(Mismatch, match=r"(?s)RuntimeError.*line \d+: `return X @ X`"):
        Tester("f", hidden=True, remote_=remote).call(h, X)


def test_may_modify_writes_back_and_lists_see_replacements():
    def step(params):
        with torch.no_grad():
            params[0] -= 1
        params[1] = params[1] * 0

    remote, h = student(step)
    a, b = torch.ones(2, requires_grad=True), torch.ones(3)
    listed = [a, b]
    Tester("f", hidden=True, remote_=remote).call(h, listed, may_modify=True)
    assert listed[0] is a and torch.equal(a.detach(), torch.zeros(2)) and a.requires_grad
    assert listed[1] is not b and torch.equal(listed[1], torch.zeros(3))


def test_results_cross_as_exact_types_only():
    class Liar(torch.Tensor):
        def __eq__(self, other):
            return True

    remote, h = student(lambda: torch.zeros(2).as_subclass(Liar))
    got = Tester("f", hidden=True, remote_=remote).call(h)
    assert not isinstance(got, torch.Tensor) and "Liar" in got.type_name
    with pytest.raises(Mismatch, match="should return a torch.Tensor, but returned"):
        expect_tensor(got, torch.zeros(2), what="f()")
    remote, h = student(lambda: (1.5, [torch.ones(1)], {"a": 2}))
    got = Tester("f", hidden=True, remote_=remote).call(h)
    assert type(got[0]) is float and type(got[1][0]) is torch.Tensor and got[2] == {"a": 2}


def test_case_records_and_scores():
    t = Tester("f", hidden=True)
    with t.case("a", weight=3):
        pass
    with t.case("b"):
        raise Mismatch("wrong")
    v = t.verdict(2.0)
    assert v.score == 1.5 and not v.passed and "- b: wrong" in v.feedback


def test_visible_check_api(capsys):
    check = checker(CH)
    check("linreg", lambda X, w, b: X @ w + b)
    assert "linreg: the visible check passed" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="bias b is not added"):
        check("linreg", lambda X, w, b: X @ w)

    def stub(X, w, b):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError, match="not implemented yet"):
        check("linreg", stub)
    with pytest.raises(KeyError, match="no exercise 'linrag'"):
        check("linrag", stub)


def test_hidden_check_in_the_authors_view(monkeypatch, capsys):
    monkeypatch.delenv("GRADER_STRICT", raising=False)
    verdict = hidden_check(CH, "linreg", lambda X, w, b: X @ w)
    assert verdict.score == 0 and "score: 0 / 1" in capsys.readouterr().out
    monkeypatch.setenv("GRADER_STRICT", "1")
    with pytest.raises(AssertionError, match="below full marks"):
        hidden_check(CH, "linreg", lambda X, w, b: X @ w)


def test_failed_check_shows_feedback_without_grader_frames():
    check = checker(CH)
    with pytest.raises(ExerciseFailed) as info:
        check("linreg", lambda X, w, b: X @ w)
    rendered = info.value._render_traceback_()
    assert len(rendered) == 1 and "bias b is not added" in rendered[0]
    assert "grader/" not in rendered[0]


def test_visible_check_stops_an_endless_loop(monkeypatch):
    import grader.check as gc

    monkeypatch.setattr(gc, "TIME_LIMIT", 0.5)

    def forever(X, w, b):
        while True:
            pass

    with pytest.raises(ExerciseFailed, match="stopped after 0.5 s"):
        checker(CH)("linreg", forever)
