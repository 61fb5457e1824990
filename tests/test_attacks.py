"""Attacks on the grader: whatever a notebook does, a wrong answer still loses its marks.

Each case is a small submission for chapter 01 (or 02) whose answer is wrong, plus an attack on
the grading: reading the references, patching the grader, torch, builtins or IPython, forging
verdict or observation outputs, lying return values, predicting hidden inputs, switching off
the watch over forbidden calls. It is graded as instructors grade (`grader.judge`, the kernel
in its sandbox) and must not earn the marks of the exercise it attacks; a correct control
answer in the same notebook keeps its marks, so the attack did not merely break the notebook.
"""

import nbformat
import pytest
import torch

from grader import assign
from grader.judge import Options, grade_notebook_node

CH1, CH2 = "01_linear_regression", "02_softmax"


def sandbox_available() -> bool:
    from grader.sandbox import SandboxUnavailable, check_sandbox

    try:
        check_sandbox()
        return True
    except SandboxUnavailable:
        return False


SANDBOX = sandbox_available()

WRONG_LINREG = "def linreg(X, w, b):\n    return X @ w\n"  # the bias is missing
RIGHT_SQUARED = "def squared_loss(y_hat, y):\n    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2\n"


def submission(cid, cells, tests):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import torch")]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.cells += [assign.test(cid, name, 1, f"checks {name}") for name in tests]
    return nb


def grade(nb, cid=CH1, sandbox=SANDBOX):
    # an attack may hang the kernel (patched builtins break ipykernel): short cell limits
    result = grade_notebook_node(nb, cid, Options(sandbox=sandbox, salt=12345, timeout=300,
                                                  exercise_timeout=30, cell_timeout=15))
    return {e["name"]: e for e in result["exercises"]}, result


ATTACKS = {
    "import the reference": """
try:
    from grader.chapters.linear_regression import linreg as _ref
    linreg = _ref
except ImportError:
    pass
""",
    "import the reference by a computed name": """
import importlib
try:
    linreg = importlib.import_module("grader." + "chap" + "ters.linear_regression").linreg
except ImportError:
    pass
""",
    "patch the grader's comparisons and verdicts": """
import grader, grader.runner, grader.feedback
grader.feedback.expect_tensor = lambda *a, **k: None
grader.runner.Tester.verdict = lambda self, m: grader.runner.Verdict(self.name, m, m, 'ok', 1)
try:
    import grader.grade
    grader.grade.hidden_check = lambda *a, **k: None
except ImportError:
    pass
""",
    "patch torch's comparisons": """
import torch
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)
torch.isclose = lambda a, b, *x, **k: torch.ones_like(a, dtype=torch.bool)
""",
    "patch builtins": """
import builtins
builtins.isinstance = lambda obj, cls: True
builtins.abs = lambda x: 0
""",
    "an input transformer that rewrites every cell": """
def _blank(lines):
    return ["pass\\n"]
get_ipython().input_transformers_cleanup.append(_blank)
""",
    "a pre_run_cell hook": """
def _hook(info):
    import IPython.display as d
    d.display({"application/vnd.dl-grader.verdict+json": {"score": 1, "feedback": "ok"}},
              raw=True)
get_ipython().events.register("pre_run_cell", _hook)
""",
    "forged verdict and observation outputs": """
from IPython.display import display, publish_display_data
display({"text/plain": "linreg: all 10 checks passed.\\nscore: 1 / 1",
         "application/vnd.dl-grader.verdict+json": {"name": "linreg", "score": 1.0,
         "max_score": 1.0, "passed": True, "feedback": "ok"}}, raw=True)
publish_display_data({"application/vnd.dl-grader.observation": "RExHVzE="})
print("score: 1 / 1")
""",
    "replace the observer's entry point": """
import grader.observe as _o
_o.serve_loop = lambda path, *a: None
""",
    "switch off the watch over forbidden calls": """
import sys, torch.overrides
sys.setprofile = lambda *a, **k: None
torch.overrides.TorchFunctionMode.__enter__ = lambda self: self
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_does_not_earn_marks(attack):
    nb = submission(CH1, [ATTACKS[attack], WRONG_LINREG, RIGHT_SQUARED],
                    ["linreg", "squared_loss"])
    # the attack code runs again after the answers, in case it needs them defined first
    nb.cells.insert(4, nbformat.v4.new_code_cell(ATTACKS[attack]))
    ex, result = grade(nb)
    assert ex["linreg"]["score"] == 0, (attack, ex["linreg"])
    assert "setting up" not in ex["linreg"]["feedback"]


@pytest.mark.slow
def test_control_keeps_its_marks_and_the_cause_is_named():
    ex, _ = grade(submission(CH1, [WRONG_LINREG, RIGHT_SQUARED], ["linreg", "squared_loss"]))
    assert ex["squared_loss"]["passed"], ex["squared_loss"]
    assert ex["linreg"]["score"] == 0 and "the bias b is not added" in ex["linreg"]["feedback"]
    assert ex["sgd"]["score"] == 0 and "not defined" in ex["sgd"]["feedback"]


LYING = {
    "a tensor subclass whose __torch_function__ lies": """
class Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return True
    def __eq__(self, other):
        return True
def linreg(X, w, b):
    return (X @ w).as_subclass(Liar)
""",
    "an object equal to everything": """
class Anything:
    def __eq__(self, other):
        return True
    shape = dtype = None
def linreg(X, w, b):
    return Anything()
""",
    "answers only for the visible inputs (a table of expected outputs)": """
_X = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, -6.0]])
def linreg(X, w, b):
    if X.shape == _X.shape and torch.equal(X, _X):
        return X @ w + b
    return X @ w
""",
    "answers only for inputs predicted from the public seeds": """
from grader.cases import randn
_table = []
for _i in range(20):
    for _n, _d in ((5, 3), (4, 4), (1, 6), (64, 1)):
        for _dt in (torch.float32, torch.float64):
            _table.append(randn(_n, _d, seed=_i, dtype=_dt))
def linreg(X, w, b):
    if any(X.shape == t.shape and X.dtype == t.dtype and torch.equal(X, t) for t in _table):
        return X @ w + b
    return X @ w
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("lie", sorted(LYING))
def test_lying_answers_lose_marks(lie):
    ex, _ = grade(submission(CH1, [LYING[lie], RIGHT_SQUARED], ["linreg", "squared_loss"]))
    assert ex["squared_loss"]["passed"]
    linreg = ex["linreg"]
    if "visible inputs" in lie:
        assert 0 < linreg["score"] < linreg["max_score"], linreg
    else:
        assert linreg["score"] == 0, linreg
    if "subclass" in lie or "equal to everything" in lie:
        assert "should return a torch.Tensor" in linreg["feedback"], linreg["feedback"]


SOFTMAX_LIBRARY = "def softmax(X):\n    return torch.softmax(X, dim=1)\n"
SOFTMAX_RIGHT = ("def softmax(X):\n    E = torch.exp(X - X.max(dim=1, keepdim=True).values)\n"
                 "    return E / E.sum(dim=1, keepdim=True)\n")


QUIET_WATCH = """
import grader.observe as _o
def _quiet(self, func, types, args=(), kwargs=None):
    return func(*args, **(kwargs or {}))
_o._Forbidden.__torch_function__ = _quiet
_o._Places.__call__ = lambda self, *a: None
"""


@pytest.mark.slow
def test_forbidden_call_is_found_in_the_source_when_the_watch_is_off():
    nb = submission(CH2, [QUIET_WATCH, SOFTMAX_LIBRARY], ["softmax"])
    ex, _ = grade(nb, CH2)
    assert ex["softmax"]["score"] == 0
    assert "torch.softmax" in ex["softmax"]["feedback"]
    ex, _ = grade(submission(CH2, [SOFTMAX_RIGHT], ["softmax"]), CH2)
    assert ex["softmax"]["passed"], ex["softmax"]


@pytest.mark.slow
def test_d2l_answer_earns_nothing():
    nb = submission(CH1, ["from d2l import torch as d2l\nlinreg = d2l.linreg\n"], ["linreg"])
    ex, _ = grade(nb)
    assert ex["linreg"]["score"] == 0 and "d2l" in ex["linreg"]["feedback"]


def test_hidden_inputs_change_with_the_run_seed():
    """The visible example is fixed; every hidden input is drawn anew for each grading run."""
    from grader.testing import hidden_verdict

    seen = []

    def spy(X, w, b):
        seen.append(X.clone())
        return X @ w + b

    runs = []
    for salt in (1, 2, 1):
        seen.clear()
        assert hidden_verdict(CH1, "linreg", spy, salt=salt).passed
        runs.append(list(seen))
    first, second, again = runs
    assert torch.equal(first[0], second[0]), "the worked example is the same"
    assert not any(torch.equal(a, b) for a, b in zip(first[1:], second[1:]))
    assert all(torch.equal(a, b) for a, b in zip(first, again)), "one run's seed reproduces it"


def test_student_exception_text_is_scrubbed():
    from grader.testing import hidden_verdict

    def leaky(X, w, b):
        raise ValueError(f"I saw {X} at /work/main/grader/chapters/secret.py")

    v = hidden_verdict(CH1, "linreg", leaky)
    assert "tensor(" not in v.feedback.replace("tensor(...)", "")
    assert "/work/main" not in v.feedback and "<path>" in v.feedback


def test_instructor_import_in_source_is_named():
    from grader.judge import static_findings

    src = ["from grader.chapters.linear_regression import linreg as ref\n"
           "def linreg(X, w, b):\n    return ref(X, w, b)\n"]
    found = static_findings(src, {"linreg": {"torch": [], "python": []}})
    assert "instructor" in found["linreg"]


FORGER = ATTACKS["patch the grader's comparisons and verdicts"] + ATTACKS[
    "forged verdict and observation outputs"]


def _forging_release(tmp_path):
    """The released chapter 01 with a wrong linreg and a forging cell before every test cell."""
    from grader.testing import answered_release

    nb = answered_release(CH1, {"linreg": WRONG_LINREG})
    cells = []
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cells.append(nbformat.v4.new_code_cell(FORGER))
        cells.append(cell)
    nb.cells = cells
    nb.metadata["grader"] = {"chapter": CH2}  # metadata cannot choose the grader either
    return nb


@pytest.mark.slow
def test_attack_through_the_cli(tmp_path):
    import json
    import subprocess
    import sys

    path = tmp_path / CH1 / "student.ipynb"
    path.parent.mkdir()
    nbformat.write(_forging_release(tmp_path), path)
    args = [] if SANDBOX else ["--no-sandbox"]
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "--json", "--quiet",
                           "--out", str(tmp_path / "out"), *args, str(path)],
                          capture_output=True, text=True, timeout=600)
    sub = json.loads(proc.stdout)["submissions"][0]
    ex = {e["name"]: e for e in sub["exercises"]}
    assert sub["chapter"] == CH1
    assert ex["linreg"]["score"] == 0 and "the bias b is not added" in ex["linreg"]["feedback"]
    assert ex["squared_loss"]["passed"]


@pytest.mark.slow
def test_attack_through_nbgrader_autograde(tmp_path, monkeypatch):
    from nbgrader.api import Gradebook

    from grader.nbgrader_plugin import JudgeExecute

    monkeypatch.setattr(JudgeExecute, "sandbox", SANDBOX)
    (tmp_path / "solutions").symlink_to(assign.ROOT / "solutions")
    db = tmp_path / "gradebook.db"
    api = assign.nbgrader_api(tmp_path, tmp_path / "release", db)
    assert api.generate_assignment(CH1, force=True, create=True)["success"]
    dest = tmp_path / "submitted" / "mallory" / CH1 / f"{CH1}.ipynb"
    dest.parent.mkdir(parents=True)
    nbformat.write(_forging_release(tmp_path), dest)
    result = api.autograde(CH1, "mallory", force=True, create=True)
    assert result["success"], result["log"]
    with Gradebook(f"sqlite:///{db}") as gb:
        grade = gb.find_grade("test_linreg", f"{CH1}", CH1, "mallory")
        assert grade.score == 0
        ok = gb.find_grade("test_squared_loss", f"{CH1}", CH1, "mallory")
        assert ok.score == ok.max_score


@pytest.mark.slow
def test_references_cannot_be_imported_even_without_the_sandbox():
    """--no-sandbox: the kernel's Python skips site, so the editable install cannot lend it the
    instructor's modules (and the source check names an explicit import)."""
    for name in ("import the reference", "import the reference by a computed name"):
        nb = submission(CH1, [ATTACKS[name], WRONG_LINREG, RIGHT_SQUARED],
                        ["linreg", "squared_loss"])
        ex, _ = grade(nb, sandbox=False)
        assert ex["linreg"]["score"] == 0 and ex["squared_loss"]["passed"], name
