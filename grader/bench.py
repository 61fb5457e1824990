"""Benchmarks (`python -m grader bench`): check latency per exercise and grading time per chapter.

For each chapter: the solution notebook runs in a kernel (fast mode), then each exercise's
visible and hidden checks are timed on the solution's own answers (median of `repeat` runs),
and `grade_notebook` is timed on the released notebook answered perfectly.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import nbformat

from grader.assign import ROOT, SOURCE, source_chapters, use_environment_path

TIMING_CELL = """
import json as _json, statistics as _st, time as _time
from grader.registry import get_chapter as _gc
from grader.testing import hidden_verdict as _hv, visible_verdict as _vv
_out = {{}}
for _name in _gc({cid!r}).exercises:
    _obj = globals()[_name]
    _v, _h = [], []
    for _ in range({repeat}):
        _t = _time.perf_counter(); _vv({cid!r}, _name, _obj); _v.append(_time.perf_counter() - _t)
        _t = _time.perf_counter(); _r = _hv({cid!r}, _name, _obj); _h.append(_time.perf_counter() - _t)
    _out[_name] = [_st.median(_v), _st.median(_h), _r.checks, _r.passed]
print("BENCH" + _json.dumps(_out))
"""


def bench_chapter(cid: str, repeat: int = 3) -> dict:
    from nbclient import NotebookClient

    from grader.grade import grade_notebook
    from grader.testing import answered_release

    nb = nbformat.read(ROOT / SOURCE / cid / f"{cid}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(TIMING_CELL.format(cid=cid, repeat=repeat)))
    os.environ.update(GRADER_FAST="1", MPLBACKEND="Agg")
    os.environ.pop("GRADER_STRICT", None)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": tmp}}).execute()
        run = time.perf_counter() - start
        text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
        checks = json.loads(text.split("BENCH", 1)[1])
        path = Path(tmp) / f"{cid}.ipynb"
        nbformat.write(answered_release(cid), path)
        start = time.perf_counter()
        graded = grade_notebook(path)
        grade_time = time.perf_counter() - start
    return {"chapter": cid, "solution_run_fast_s": run, "grade_s": grade_time,
            "score": graded["score"], "max_score": graded["max_score"], "checks": checks}


def main(chapters: list[str] | None, repeat: int = 3) -> int:
    use_environment_path()
    for cid in chapters or source_chapters():
        r = bench_chapter(cid, repeat)
        print(f"{cid}: solution notebook (fast mode, incl. hidden checks) "
              f"{r['solution_run_fast_s']:.1f} s; grading one perfect notebook "
              f"{r['grade_s']:.1f} s ({r['score']:g}/{r['max_score']:g})")
        print(f"  {'exercise':<24} {'visible':>9} {'hidden':>9} {'cases':>6}")
        for name, (v, h, n, ok) in r["checks"].items():
            print(f"  {name:<24} {v * 1000:>7.0f}ms {h * 1000:>7.0f}ms {n:>6}"
                  + ("" if ok else "  (solution below full marks!)"))
    return 0
