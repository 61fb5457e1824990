"""The checking machinery: layered feedback, student-code calls, the student-side API."""

import pytest
import torch

from grader.check import HIDDEN_RESULTS, ExerciseFailed, checker
from grader.feedback import Mismatch, expect_tensor, fmt_value
from grader.grade import hidden_check
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


def test_call_detects_in_place_mutation_forbidden_calls_and_student_errors():
    t = Tester("f", hidden=True)
    X = torch.randn(3, 4)
    with pytest.raises(Mismatch, match="modified its input in place"):
        t.call(lambda X: X.mul_(2), X)
    with pytest.raises(Mismatch, match="from scratch"):
        t.call(lambda X: torch.softmax(X, 1), X, forbidden={torch.softmax: "torch.softmax"})
    with pytest.raises(Mismatch, match="from scratch"):
        t.call(lambda X: X.softmax(1), X, forbidden={torch.Tensor.softmax: "Tensor.softmax"})

    def broken(X):
        return X @ X

    with pytest.raises(Mismatch, match=r"(?s)RuntimeError.*line \d+: `return X @ X`"):
        t.call(broken, X)


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
    assert "visible checks passed" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="bias b is not added"):
        check("linreg", lambda X, w, b: X @ w)

    def stub(X, w, b):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError, match="not implemented yet"):
        check("linreg", stub)
    with pytest.raises(KeyError, match="no exercise 'linrag'"):
        check("linrag", stub)


def test_hidden_check_then_visible_call_returns_the_score(monkeypatch, capsys):
    monkeypatch.delenv("GRADER_STRICT", raising=False)
    verdict = hidden_check(CH, "linreg", lambda X, w, b: X @ w)
    assert verdict.score == 0 and "score: 0 / 1" in capsys.readouterr().out
    assert checker(CH)("linreg", lambda X, w, b: X @ w) == 0.0
    assert not HIDDEN_RESULTS
    monkeypatch.setenv("GRADER_STRICT", "1")
    with pytest.raises(AssertionError, match="below full marks"):
        hidden_check(CH, "linreg", lambda X, w, b: X @ w)
    HIDDEN_RESULTS.clear()
