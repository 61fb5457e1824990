"""Benchmarks (`python -m grader bench`): where the time of checking and grading goes.

Per chapter (`python -m grader bench [CHAPTER...]`):
- each exercise's visible check as a student edition runs it (recorded reference values, in
  the student's process) and its hidden check (in process), median of `repeat` runs, on the
  solution's own answers;
- grading one perfect notebook as instructors do (`grader.judge`: sandboxed kernel, cells,
  hidden checks through the kernel), split into kernel start, the notebook's cells and checks.

A class (`python -m grader bench --batch N`): N submissions of chapter 01, one in ten faulty
(corrupt, wrong chapter folder, a crashing or looping answer), graded with `-j 1`, with `-j 2`
and through `nbgrader autograde`, in one run on this machine: notebooks per minute and grades
lost (submissions without a recorded result).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from grader.assign import ROOT, SOURCE, source_chapters, use_environment_path


def _solution_answers(cid: str) -> dict:
    """Run the solution's answer cells (and what they need) in this process; return globals."""
    nb = nbformat.read(ROOT / SOURCE / cid / f"{cid}.ipynb", as_version=4)
    import contextlib
    import io

    ns: dict = {}
    os.environ.setdefault("GRADER_FAST", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        _run_cells(nb, ns, cid)
    return ns


def _run_cells(nb, ns: dict, cid: str) -> None:
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or (meta.get("grade") and not meta.get("solution")):
            continue
        src = "\n".join(line for line in cell.source.splitlines()
                        if not line.lstrip().startswith(("%", "!")))
        try:
            exec(compile(src, f"<{cid}>", "exec"), ns)  # noqa: S102 - the course's own solution
        except Exception:  # noqa: BLE001 - a plotting cell may fail headless; answers matter
            continue


def check_latency(cid: str, repeat: int = 3) -> dict:
    from grader.check import recorded_refs  # noqa: F401 - what an edition uses
    from grader.edition import record_chapter
    from grader.registry import get_chapter
    from grader.remote import local_remote
    from grader.runner import LiveRefs, RecordedRefs, run_check
    from grader.wire import dumps

    chapter = get_chapter(cid)
    recorded = RecordedRefs({k: dumps(v) for k, v in record_chapter(cid).items()})
    ns = _solution_answers(cid)
    out = {}
    for name, ex in chapter.exercises.items():
        if name not in ns:
            continue
        vis, hid, passed, checks = [], [], True, 0
        for _ in range(repeat):
            remote = local_remote({"answer": ns[name]})
            t = time.perf_counter()
            run_check(ex, remote.global_("answer"), hidden=False, remote_=remote, refs=recorded)
            vis.append(time.perf_counter() - t)
            remote = local_remote({"answer": ns[name]})
            t = time.perf_counter()
            v = run_check(ex, remote.global_("answer"), hidden=True, remote_=remote,
                          refs=LiveRefs(chapter.references), salt=1)
            hid.append(time.perf_counter() - t)
            passed &= v.passed
            checks = v.checks
        out[name] = {"visible_s": statistics.median(vis), "hidden_s": statistics.median(hid),
                     "cases": checks, "passed": passed}
    return out


def grade_time(cid: str, sandbox: bool = True) -> dict:
    from grader.judge import Options, grade_notebook_node
    from grader.testing import answered_release

    t = time.perf_counter()
    result = grade_notebook_node(answered_release(cid), cid, Options(sandbox=sandbox))
    return {"total_s": time.perf_counter() - t, "score": result["score"],
            "max_score": result["max_score"], **result.get("timing", {})}


def bench_chapters(chapters, repeat: int, sandbox: bool) -> int:
    for cid in chapters:
        lat = check_latency(cid, repeat)
        g = grade_time(cid, sandbox)
        print(f"{cid}: grading one perfect notebook {g['total_s']:.1f} s ({g['score']:g}/"
              f"{g['max_score']:g}): kernel start {g.get('kernel_start', 0):.1f} s, the "
              f"notebook's cells {g.get('cells', 0):.1f} s, hidden checks {g.get('checks', 0):.1f} s")
        print(f"  {'exercise':<24} {'visible':>9} {'hidden':>9} {'cases':>6}")
        for name, r in lat.items():
            print(f"  {name:<24} {r['visible_s'] * 1000:>7.0f}ms {r['hidden_s'] * 1000:>7.0f}ms "
                  f"{r['cases']:>6}" + ("" if r["passed"] else "  (solution below full marks!)"))
        sys.stdout.flush()
    return 0


# --- a class -----------------------------------------------------------------------------

FAULTS = {
    "corrupt": lambda path, good: path.write_text("{\"cells\": [", encoding="utf-8"),
    "crash": lambda path, good: _with_cell(path, good, "import os\nos._exit(1)"),
    "loop": lambda path, good: _with_cell(path, good, "while True:\n    pass"),
    "syntax": lambda path, good: _with_cell(path, good, "def linreg(X, w, b)\n    return X"),
    "bad utf-8": lambda path, good: path.write_bytes(b"\xff\xfe{not a notebook"),
}


def _with_cell(path: Path, nb, code: str):
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.cells.insert(3, nbformat.v4.new_code_cell(code))
    nbformat.write(nb, path)


def make_class(root: Path, n: int, cid: str = "01_linear_regression") -> list[Path]:
    from grader.testing import answered_release

    good = answered_release(cid)
    untouched = nbformat.read(ROOT / "chapters" / cid / f"{cid}.ipynb", as_version=4)
    faults = list(FAULTS)
    paths = []
    for i in range(n):
        path = root / "submitted" / f"student{i:03d}" / cid / f"{cid}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 10 == 9:
            FAULTS[faults[(i // 10) % len(faults)]](path, good)
        else:
            nbformat.write(good if i % 3 else untouched, path)
        paths.append(path)
    return paths


def _cli(paths, out: Path, jobs: int, sandbox: bool) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "grader", "grade", "--json", "--quiet", "--out", str(out),
           "-j", str(jobs), "--timeout", "300", "--cell-timeout", "60",
           *([] if sandbox else ["--no-sandbox"]), *map(str, paths)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - t
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = {"error": proc.stderr[-2000:]}
    return took, data


def _autograde(root: Path, cid: str, students: list[str]) -> tuple[float, int]:
    from grader.assign import nbgrader_api

    (root / "solutions").symlink_to(ROOT / "solutions")
    api = nbgrader_api(root, root / "release", root / "gradebook.db")
    api.generate_assignment(cid, force=True, create=True)
    t = time.perf_counter()
    ok = 0
    for s in students:
        ok += bool(api.autograde(cid, s, force=True, create=True).get("success"))
    return time.perf_counter() - t, ok


def bench_class(n: int, sandbox: bool, jobs_list=(1, 2)) -> int:
    cid = "01_linear_regression"
    with tempfile.TemporaryDirectory(prefix="bench-class-") as tmp:
        root = Path(tmp)
        paths = make_class(root, n, cid)
        print(f"a class of {n} submissions of {cid}, {sum(1 for i in range(n) if i % 10 == 9)} "
              "of them faulty")
        rows = []
        for jobs in jobs_list:
            took, data = _cli(paths, root / f"out-j{jobs}", jobs, sandbox)
            subs = data.get("submissions", [])
            ok = sum(1 for s in subs if s.get("status") == "ok")
            bad = [s for s in subs if s.get("status") != "ok"]
            rows.append((f"python -m grader grade -j {jobs}", took, n - len(subs)))
            print(f"  -j {jobs}: {took:.0f} s, {60 * n / took:.1f} notebooks/min, {ok} graded, "
                  f"{len(bad)} reported as not gradable"
                  + (f" ({'; '.join(sorted({str(s.get('reason'))[:60] for s in bad}))})"
                     if bad else "") + f", grades lost {n - len(subs)}")
        students = [p.parts[-3] for p in paths]
        took, ok = _autograde(root, cid, students)
        print(f"  nbgrader autograde (serial): {took:.0f} s, {60 * n / took:.1f} notebooks/min, "
              f"{ok} of {n} autograded")
        base = rows[-1][1]
        print(f"  -j 2 is {took / base:.2f} times as fast as nbgrader autograde on this batch")
    return 0


def main(chapters=None, repeat: int = 3, batch: int = 0, sandbox: bool = True,
         jobs_list=(1, 2)) -> int:
    use_environment_path()
    if batch:
        return bench_class(batch, sandbox, jobs_list)
    return bench_chapters(chapters or source_chapters(), repeat, sandbox)
