"""Bombs and crashes in a submission cost only the exercise they are in.

One chapter-01 notebook whose answers misbehave when the grader calls them — memory, time,
disk, a kernel that exits, output floods — next to correct answers: each bad exercise scores 0
with a clear reason, the correct ones keep full marks, and the grader's own memory does not
grow with the output."""

import resource

import pytest

from grader.judge import Options, grade_notebook_node
from tests.test_attacks import CH1, SANDBOX, submission

BOMBS = {
    "linreg": "def linreg(X, w, b):\n    big = bytearray(8 * 2**30)\n    return X @ w + b\n",
    "squared_loss": "def squared_loss(y_hat, y):\n    while True:\n        pass\n",
    "sgd": ("def sgd(params, lr, batch_size):\n    with open('big.bin', 'wb') as f:\n"
            "        f.write(b'0' * (512 * 2**20))\n"),
    "fit_normal_equation": "def fit_normal_equation(X, y):\n    import os\n    os._exit(3)\n",
}
GOOD = {
    "gaussian_nll": ("def gaussian_nll(y_hat, y, sigma):\n    import math\n"
                     "    r = y.reshape(y_hat.shape) - y_hat\n"
                     "    return (0.5 * math.log(2 * math.pi * sigma ** 2) + r ** 2 / "
                     "(2 * sigma ** 2)).mean()\n"),
    "max_stable_lr": ("def max_stable_lr(X):\n"
                      "    A = torch.cat([X.double(), torch.ones(len(X), 1, dtype=torch.float64)], 1)\n"
                      "    return 2.0 / torch.linalg.eigvalsh(A.T @ A / len(X)).max().item()\n"),
}
FLOOD = "print('x' * 100_000_000)"


@pytest.mark.slow
def test_each_bomb_costs_only_its_exercise():
    cells = [*BOMBS.values(), FLOOD, *GOOD.values()]
    names = [*BOMBS, *GOOD]
    nb = submission(CH1, cells, names)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = grade_notebook_node(nb, CH1, Options(
        sandbox=SANDBOX, salt=7, exercise_timeout=15, cell_timeout=30, timeout=400,
        memory_bytes=2 * 2**30, max_restarts=6))
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    ex = {e["name"]: e for e in result["exercises"]}
    for name in GOOD:
        assert ex[name]["passed"], (name, ex[name], result["notes"])
    for name in BOMBS:
        assert ex[name]["score"] == 0, (name, ex[name])
    assert "MemoryError" in ex["linreg"]["feedback"] or "died" in ex["linreg"]["feedback"]
    assert "longer" in ex["squared_loss"]["feedback"], ex["squared_loss"]
    assert "File too large" in ex["sgd"]["feedback"] or "OSError" in ex["sgd"]["feedback"], \
        ex["sgd"]
    assert "could not be graded" in ex["fit_normal_equation"]["feedback"]
    assert any("output" in n for n in result["notes"]), result["notes"]
    assert grew_mb < 60, f"the grader's memory grew by {grew_mb:.0f} MB"
