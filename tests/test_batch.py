"""The batch layer (grader.intake, grader.store, grader.progress, grader.batch) with a FAKE worker:
a small script that plays `python -m grader _grade-one PATH --result-file F` as each test notebook's
metadata tells it to (answer, crash, hang, flood stdout, write garbage, ...), and logs each of its
invocations to a file, so the tests can count what was graded."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from grader import batch
from grader.intake import SubmissionError, find_submissions, inspect_submission, load_submission
from grader.progress import Progress
from grader.store import ResultStore, store_path, submission_key

ROOT = Path(__file__).resolve().parents[1]

FAKE_WORKER = r'''
import json, os, sqlite3, subprocess, sys, time

args = sys.argv[1:]
path, result_file = args[0], args[args.index("--result-file") + 1]
with open(path, encoding="utf-8") as f:
    fake = json.load(f)["metadata"].get("fake", {})
rows = None
if os.environ.get("FAKE_STORE") and os.path.exists(os.environ["FAKE_STORE"]):
    con = sqlite3.connect(os.environ["FAKE_STORE"])
    rows = con.execute("SELECT count(*) FROM results").fetchone()[0]
    con.close()
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({"path": path, "pid": os.getpid(), "result_file": result_file, "argv": args,
                        "seed": os.environ.get("GRADER_RUN_SEED"), "rows": rows}) + "\n")
mode, score = os.environ.get("FAKE_MODE") or fake.get("mode", "ok"), fake.get("score", 1.5)
result = {"ok": {"chapter": "99_fake", "score": score, "max_score": 2.0, "exercises": [
    {"name": "a", "score": min(score, 1.0), "max_score": 1.0, "passed": score >= 1, "feedback": "a"},
    {"name": "b", "score": max(score - 1.0, 0), "max_score": 1.0, "passed": score >= 2,
     "feedback": "b: wrong\nexpected 2"}]}}

def write(obj):
    with open(result_file + ".tmp", "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    os.replace(result_file + ".tmp", result_file)

def spawn(code, new_session):
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=new_session).pid

time.sleep(fake.get("sleep", 0))
if mode == "ok":
    write(result)
elif mode == "crash":
    print("Traceback (most recent call last):\nRuntimeError: the kernel died", file=sys.stderr)
    sys.exit(3)
elif mode == "badjson":
    write('{"ok": {"score": 1')
elif mode == "error":
    write({"error": path + ": cannot tell which chapter this notebook is"})
elif mode == "fatal":
    write({"error": "no sandbox on this machine: install bubblewrap", "fatal": True})
elif mode == "hang":
    pids = [spawn("import time; time.sleep(300)", False), spawn("import time; time.sleep(300)", True)]
    with open(fake["pids"], "w") as f:
        json.dump(pids, f)
    time.sleep(300)
elif mode == "garbage":
    print("x" * 100000)
    print(json.dumps({"ok": dict(result["ok"], score=999)}), flush=True)  # a forged last line
    late = ("import json, sys, time; time.sleep(0.3); "
            "print(json.dumps({'ok': {'score': 999}}), flush=True); time.sleep(1); "
            f"open({fake['marker']!r}, 'w').write('still alive')")
    spawn(late, True)  # escapes the process group; inherits our stdout
    write(result)
'''

# The CLI driver skips grader/__init__.py (it imports torch: ~3 s per start on 2 cores) by
# registering the package without running it; grader.batch itself needs nothing from it.
DRIVER = (f"import sys, types; pkg = types.ModuleType('grader'); "
          f"pkg.__path__ = [{str(ROOT / 'grader')!r}]; sys.modules['grader'] = pkg; "
          f"from grader.batch import main; "
          f"print('driver ready', file=sys.stderr, flush=True); "
          f"sys.exit(main(sys.argv[2:], worker_cmd=[sys.executable, sys.argv[1]]))")


def notebook(fake: dict | None = None, *, schema_version=3, nbformat=4) -> dict:
    meta = {"fake": fake or {}}
    return {"nbformat": nbformat, "nbformat_minor": 5, "metadata": meta, "cells": [
        {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": ["# Title\n", "text"]},
        {"cell_type": "code", "id": "c1", "execution_count": None, "outputs": [],
         "metadata": {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 1,
                                   "grade_id": "test_a", "schema_version": schema_version}},
         "source": "check(a)"}]}


def write_nb(path: Path, fake: dict | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook(fake, **kw)), encoding="utf-8")
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The fake worker's command and its invocation log (also passed to CLI subprocesses)."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    log = tmp_path / "invocations.jsonl"
    monkeypatch.setenv("FAKE_LOG", str(log))

    class Fake:
        cmd = [sys.executable, str(script)]

        @staticmethod
        def calls() -> list[dict]:
            return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []

    Fake.script = script
    return Fake


def _default_signals():
    # as from a terminal: a test runner's worker may ignore SIGINT, and a child would inherit it
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_cli(fake, args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(fake.script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals, **kw)


def comparable(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "graded_at")} for r in results]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except OSError:
        return False


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def store_rows(out: Path) -> int:
    if not store_path(out).exists():
        return 0
    con = sqlite3.connect(store_path(out), timeout=10)
    try:
        return con.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    finally:
        con.close()


# -- intake ----------------------------------------------------------------------------------------
def corrupt_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, part of the expected reason)"""
    d.mkdir(parents=True, exist_ok=True)
    text = json.dumps(notebook())
    cases = {}

    def case(name, reason, data=None):
        p = d / name
        if data is not None:
            p.write_bytes(data if isinstance(data, bytes) else data.encode())
        cases[name] = (p, reason)

    case("truncated.ipynb", "truncated JSON", text[: len(text) // 2])
    case("corrupt.ipynb", "corrupt JSON at line 1 column 2", "{not json")
    case("bad_utf8.ipynb", "not UTF-8 text (byte 0xff", text.replace("Title", "T\udcff", 1)
         .encode("utf-8", "surrogateescape"))
    case("top_list.ipynb", "top-level JSON value is a list, not an object", "[1, 2]")
    case("v3.ipynb", "nbformat 3 notebook: only nbformat 4 notebooks can be graded; open it in "
         "Jupyter 4 or later", json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {},
                                           "worksheets": [{"cells": []}]}))
    case("cells_dict.ipynb", "'cells' is an object, not a list",
         json.dumps(dict(notebook(), cells={"a": 1})))
    case("schema99.ipynb", "cell #2 (grade_id 'test_a'): nbgrader metadata schema_version 99, "
         "expected 3", json.dumps(notebook(schema_version=99)))
    case("empty.ipynb", "the file is empty", b"")
    case("notes.txt", "not a notebook (expected a .ipynb file)", "hello")
    case("missing.ipynb", "no such file")
    big = d / "huge.ipynb"
    subprocess.run(["truncate", "-s", "1G", str(big)], check=True)  # sparse: no disk used
    cases["huge.ipynb"] = (big, "too large (1.0 GB; the limit is 50.0 MB)")
    (d / "folder.ipynb").mkdir()
    cases["folder.ipynb"] = (d / "folder.ipynb", "is a directory, not a notebook")
    return cases


def test_load_submission_gives_one_clear_reason_per_corrupt_form(tmp_path):
    for name, (path, reason) in corrupt_files(tmp_path).items():
        with pytest.raises(SubmissionError) as info:
            load_submission(path)
        assert reason in info.value.reason, (name, info.value.reason)
        assert str(info.value) == f"{path}: {info.value.reason}"
        assert "\n" not in info.value.reason
    good = write_nb(tmp_path / "good.ipynb")
    nb = load_submission(good)
    assert nb.cells[0].source == "# Title\ntext" and nb.cells[1].metadata.nbgrader.grade_id == "test_a"
    assert type(nb).__name__ == "NotebookNode"


def test_a_1gb_file_is_rejected_without_reading_it(tmp_path):
    big = tmp_path / "huge.ipynb"
    subprocess.run(["truncate", "-s", "1G", str(big)], check=True)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(SubmissionError, match="too large"):
        load_submission(big)
    sub = inspect_submission(big)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1 and peak < 1_000_000, (elapsed, peak)
    assert sub.sha256 is None and sub.fingerprint.startswith("unread:size=1073741824")
    small = tmp_path / "small.ipynb"
    small.write_text(json.dumps(notebook()))
    with pytest.raises(SubmissionError, match="too large"):
        load_submission(small, max_bytes=100)


def test_find_submissions_expands_dedups_and_keeps_bad_paths(tmp_path):
    sub = tmp_path / "subs"
    b = write_nb(sub / "bob" / "hw.ipynb")
    a = write_nb(sub / "alice" / "hw.ipynb")
    write_nb(sub / "alice" / ".ipynb_checkpoints" / "hw-checkpoint.ipynb")
    (sub / "alice" / "notes.txt").write_text("not graded")
    (tmp_path / "empty").mkdir()
    found = find_submissions([str(sub), str(b), str(tmp_path / "nope.ipynb"),
                              str(tmp_path / "empty"), str(sub / "." / "alice" / "hw.ipynb")])
    assert found == [a, b, tmp_path / "nope.ipynb", (str(tmp_path / "empty"),
                                                     "no notebooks in this directory")]
    assert find_submissions(found) == found  # idempotent: run_batch accepts either


# -- store and progress ----------------------------------------------------------------------------
def test_store_keys_wal_and_concurrent_readers(tmp_path):
    nb = write_nb(tmp_path / "a.ipynb")
    key1 = submission_key("a.ipynb", inspect_submission(nb).fingerprint)
    assert key1 == submission_key("a.ipynb", inspect_submission(nb).fingerprint)
    write_nb(nb, {"score": 2})
    key2 = submission_key("a.ipynb", inspect_submission(nb).fingerprint)
    assert key2 != key1 and submission_key("b.ipynb", inspect_submission(nb).fingerprint) != key2

    store = ResultStore(tmp_path / "out")
    errors, stop = [], threading.Event()

    def reader():
        try:
            while not stop.is_set():
                store.all(), store.done_keys(), store.get("k7"), len(store)
        except Exception as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    for i in range(100):
        store.record(f"k{i}", f"p{i}", {"path": f"p{i}", "status": "ok" if i % 3 else "error"})
    store.record("k5", "p5", {"path": "p5", "status": "ok", "again": True})  # replaced in place
    stop.set()
    for t in readers:
        t.join()
    assert not errors
    store.set_meta(run_seed=1234, worker_args=["--cell-timeout", "5"])
    store.close()
    con = sqlite3.connect(store_path(tmp_path / "out"))
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    with ResultStore(tmp_path / "out", create=False) as again:
        rows = again.all()
        assert [r["path"] for r in rows] == [f"p{i}" for i in range(100)]
        assert rows[5]["again"] and again.get("k5")["again"]
        assert again.meta() == {"run_seed": 1234, "worker_args": ["--cell-timeout", "5"]}
        assert again.failed_keys() == {f"k{i}" for i in range(0, 100, 3)}
    with pytest.raises(FileNotFoundError):
        ResultStore(tmp_path / "nowhere", create=False)


def test_progress_lines():
    now = [0.0]
    out = io.StringIO()
    p = Progress(3, jobs=2, stream=out, clock=lambda: now[0], tty=False)
    p.start()
    assert out.getvalue() == "grading 3 notebooks with -j 2 ...\n"
    now[0] = 10
    p.finished("a.ipynb", True)
    now[0] = 42
    p.finished("b.ipynb", False)
    lines = out.getvalue().splitlines()
    assert lines[1] == "graded 1/3  ok 1  failed 0  elapsed 0:10  eta 0:20  last: a.ipynb"
    assert lines[2] == "graded 2/3  ok 1  failed 1  elapsed 0:42  eta 0:21  last: b.ipynb"
    tty = io.StringIO()
    p = Progress(2, stream=tty, clock=lambda: now[0], tty=True)
    p.start()
    p.add_resumed(True)
    p.finished("c.ipynb", True)
    p.tick()
    assert tty.getvalue().count("\n") == 1 and "\r\x1b[K" in tty.getvalue()
    assert tty.getvalue().endswith("graded 2/2  ok 2  failed 0  resumed 1  elapsed 0:00  eta 0:00"
                                   "  last: c.ipynb")
    p.close()
    assert tty.getvalue().endswith("\n")
    quiet = io.StringIO()
    p = Progress(1, stream=quiet, enabled=False)
    p.start()
    p.finished("a", True)
    assert quiet.getvalue() == ""


# -- batches ---------------------------------------------------------------------------------------
def test_results_are_recorded_as_each_notebook_finishes(tmp_path, fake, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("FAKE_STORE", str(store_path(out)))
    paths = [write_nb(tmp_path / f"s{i}.ipynb", {"score": i / 2}) for i in range(4)]
    err = io.StringIO()
    summary = batch.run_batch([str(p) for p in paths], out_dir=out, jobs=1, timeout=30,
                              worker_args=["--cell-timeout", "7"], worker_cmd=fake.cmd,
                              run_seed=4242, stream=err)
    calls = fake.calls()
    assert [c["rows"] for c in calls] == [0, 1, 2, 3], "each result is committed before the next"
    assert all(c["seed"] == "4242" and c["argv"][-2:] == ["--cell-timeout", "7"] for c in calls)
    assert all(os.path.isabs(c["path"]) for c in calls)
    assert summary.exit_status == 0 and summary.ok == 4 and summary.graded == 4
    assert [r["path"] for r in summary.results] == [str(p) for p in paths]
    assert [r["score"] for r in summary.results] == [0, 0.5, 1.0, 1.5]
    assert summary.results[0]["sha256"] and summary.results[0]["reason"] is None
    lines = err.getvalue().splitlines()
    assert lines[0] == "grading 4 notebooks with -j 1 ..."
    assert re.fullmatch(rf"graded 4/4  ok 4  failed 0  elapsed \d:\d\d  eta 0:00  last: {paths[3]}",
                        lines[-1])
    with ResultStore(out, create=False) as store:
        assert comparable(store.all()) == comparable(summary.results)
        assert store.meta()["run_seed"] == 4242
    csv_path = tmp_path / "grades.csv"
    batch.write_csv(csv_path, summary.results)
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "path,chapter,status,score,max_score,a,b,reason"
    assert rows[4] == f"{paths[3]},99_fake,ok,1.5,2.0,1.0,0.5,"
    buf = io.StringIO()
    batch.write_json(summary, buf)
    data = json.loads(buf.getvalue())
    assert data["counts"] == {"total": 4, "ok": 4, "failed": 0, "graded": 4, "skipped": 0,
                              "remaining": 0}
    assert data["submissions"][1]["exercises"][0] == {"name": "a", "score": 0.5, "max_score": 1.0,
                                                      "passed": False, "feedback": "a"}


def test_every_bad_submission_is_a_recorded_failure_and_the_rest_are_graded(tmp_path, fake):
    bad = corrupt_files(tmp_path / "bad")
    bad["folder.ipynb"] = (bad["folder.ipynb"][0], "no notebooks in this directory")
    good = [write_nb(tmp_path / "good" / f"g{i}.ipynb") for i in range(2)]
    crash = write_nb(tmp_path / "01_fake" / "crash.ipynb", {"mode": "crash"})
    badjson = write_nb(tmp_path / "badjson.ipynb", {"mode": "badjson"})
    error = write_nb(tmp_path / "error.ipynb", {"mode": "error"})
    (tmp_path / "nothing_here").mkdir()
    items = [str(tmp_path / "good"), str(crash), *[str(p) for p, _ in bad.values()], str(badjson),
             str(error), str(tmp_path / "nothing_here")]
    t0 = time.monotonic()
    summary = batch.run_batch(items, out_dir=tmp_path / "out", jobs=2, timeout=30,
                              worker_cmd=fake.cmd, progress=False,
                              chapter_max={"01_fake": 7.0}.get)
    assert time.monotonic() - t0 < 15
    by_path = {r["path"]: r for r in summary.results}
    assert len(by_path) == len(summary.results) == 2 + 3 + len(bad) + 1
    for name, (path, reason) in bad.items():
        r = by_path[str(path)]
        assert r["status"] == "error" and reason in r["reason"] and r["score"] == 0, (name, r)
        assert r["max_score"] is None and r["exercises"] == []
    assert by_path[str(crash)]["reason"] == ("the grading process exited with status 3 without "
                                             "writing a result (last output: RuntimeError: the "
                                             "kernel died)")
    assert by_path[str(crash)]["chapter"] == "01_fake" and by_path[str(crash)]["max_score"] == 7.0
    assert by_path[str(badjson)]["reason"].startswith("the grading process wrote an invalid result "
                                                      "(not JSON")
    assert by_path[str(error)]["reason"] == "cannot tell which chapter this notebook is"
    assert by_path[str(tmp_path / "nothing_here")]["reason"] == "no notebooks in this directory"
    assert [by_path[str(g)]["status"] for g in good] == ["ok", "ok"]
    assert summary.exit_status == 2 and summary.failed == len(bad) + 4 and summary.ok == 2
    invoked = sorted(Path(c["path"]).name for c in fake.calls())
    assert invoked == ["badjson.ipynb", "crash.ipynb", "error.ipynb", "g0.ipynb", "g1.ipynb"], \
        "no worker starts for a submission that intake rejects"
    with ResultStore(tmp_path / "out", create=False) as store:
        assert len(store) == len(summary.results)


def test_a_hanging_worker_is_killed_with_its_children_and_its_temp_dir_removed(tmp_path, fake):
    pids_file = tmp_path / "pids.json"
    hang = write_nb(tmp_path / "hang.ipynb", {"mode": "hang", "pids": str(pids_file)})
    ok = write_nb(tmp_path / "ok.ipynb")
    t0 = time.monotonic()
    summary = batch.run_batch([str(hang), str(ok)], out_dir=tmp_path / "out", jobs=2, timeout=1.5,
                              worker_cmd=fake.cmd, progress=False)
    assert time.monotonic() - t0 < 8
    r = summary.results[0]
    assert r["status"] == "error" and r["reason"] == "grading took longer than 1.5 s and was stopped"
    assert summary.results[1]["status"] == "ok"
    call = next(c for c in fake.calls() if c["path"].endswith("hang.ipynb"))
    assert not Path(call["result_file"]).parent.exists(), "the worker's temp dir is removed"
    pids = [call["pid"], *json.loads(pids_file.read_text())]  # worker, child, child in a new session
    wait_for(lambda: not any(alive(p) for p in pids), 5, "the worker and its children to die")


def test_stdout_garbage_and_a_late_writer_cannot_touch_the_results(tmp_path, fake):
    marker = tmp_path / "late-writer-survived"
    nb = write_nb(tmp_path / "noisy.ipynb", {"mode": "garbage", "marker": str(marker)})
    proc = run_cli(fake, [str(nb), "--out", str(tmp_path / "out"), "--json", "--quiet"])
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    data = json.loads(stdout)  # nothing but the batch's own JSON on stdout
    (r,) = data["submissions"]
    assert r["status"] == "ok" and r["score"] == 1.5
    time.sleep(1.5)
    assert not marker.exists(), "the worker's escaped child was killed when the worker ended"


def test_kill_9_then_resume_grades_each_submission_exactly_once(tmp_path, fake):
    paths = [str(write_nb(tmp_path / "subs" / f"s{i}.ipynb", {"sleep": 0.4, "score": i % 3}))
             for i in range(8)]
    out = tmp_path / "out"
    proc = run_cli(fake, [str(tmp_path / "subs"), "--out", str(out), "-j", "2", "--seed", "77"])
    try:
        wait_for(lambda: store_rows(out) >= 3, 30, "three results")
    finally:
        proc.kill()
        proc.communicate()
    first = store_rows(out)
    assert 3 <= first < 8
    calls1 = len(fake.calls())
    wait_for(lambda: not any(alive(c["pid"]) for c in fake.calls()), 5,
             "the workers of the killed batch to die with it")
    proc = run_cli(fake, ["--resume", "--out", str(out), "-j", "2", "--seed", "1", "--json",
                          "--quiet"])
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    with ResultStore(out, create=False) as store:
        rows = store.all()
    assert sorted(r["path"] for r in rows) == paths, "every submission exactly once"
    calls2 = fake.calls()[calls1:]
    assert len(calls2) == 8 - first, "nothing recorded is graded again"
    assert {c["seed"] for c in fake.calls()} == {"77"}, "the resumed run keeps the batch's seed"
    data = json.loads(stdout)
    assert data["counts"]["skipped"] == first and data["counts"]["ok"] == 8
    assert [r["path"] for r in data["submissions"]] == paths
    assert all(Path(c["result_file"]).parent.parent == out / ".work" for c in fake.calls())
    assert not (out / ".work").exists(), "temp dirs left by the killed run are removed"


def test_refuses_an_existing_store_without_resume_or_fresh(tmp_path, fake, monkeypatch):
    nb = write_nb(tmp_path / "a.ipynb")
    out = tmp_path / "out"
    kw = dict(out_dir=out, worker_cmd=fake.cmd, progress=False, timeout=30)
    batch.run_batch([str(nb)], run_seed=5, **kw)
    with pytest.raises(batch.BatchRefused, match="already holds a batch .1 results recorded.*"
                       "--resume.*--fresh"):
        batch.run_batch([str(nb)], **kw)
    with pytest.raises(batch.BatchRefused, match="nothing to resume"):
        batch.run_batch([], out_dir=tmp_path / "other", resume=True)
    import fcntl

    with open(out / ".lock", "a") as lock:  # another run of the batch is going on
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(batch.BatchRefused, match="another batch is running in .*out"):
            batch.run_batch([], resume=True, **kw)
    again = batch.run_batch([], resume=True, run_seed=9, worker_args=["--other"], **kw)
    assert again.skipped == 1 and again.graded == 0 and again.settings["run_seed"] == 5
    write_nb(nb, {"score": 2})  # a changed file is a new submission
    changed = batch.run_batch([], resume=True, **kw)
    assert changed.graded == 1 and changed.results[0]["score"] == 2
    crash = write_nb(tmp_path / "crash.ipynb", {"mode": "crash"})
    assert batch.run_batch([str(crash)], resume=True, **kw).failed == 1
    n = len(fake.calls())
    assert batch.run_batch([], resume=True, **kw).skipped == 2 and len(fake.calls()) == n
    monkeypatch.setenv("FAKE_MODE", "ok")  # the crash was the machine's fault: grade it again
    retried = batch.run_batch([], resume=True, retry_failed=True, **kw)
    assert len(fake.calls()) == n + 1 and retried.failed == 0 and retried.skipped == 1
    fresh = batch.run_batch([str(nb)], fresh=True, run_seed=6, **kw)
    assert fresh.graded == 1 and fresh.settings["run_seed"] == 6
    (backup,) = out.glob("grades.sqlite.*.bak")
    con = sqlite3.connect(backup)
    assert con.execute("SELECT count(*) FROM results").fetchone()[0] == 3, "old results are kept"
    con.close()


def test_cli_prints_the_first_line_at_once_and_refuses_clearly(tmp_path, fake):
    nb = write_nb(tmp_path / "a.ipynb", {"sleep": 1})
    out = tmp_path / "out"
    proc = run_cli(fake, [str(nb), "--out", str(out)])
    assert proc.stderr.readline() == "driver ready\n"
    t0 = time.monotonic()
    first = proc.stderr.readline()
    assert time.monotonic() - t0 < 2 and first == "grading 1 notebook with -j 1 ...\n"
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "a.ipynb  [99_fake]  score 1.5 / 2" in stdout
    assert "FAIL b" in stdout and "expected 2" in stdout
    proc = run_cli(fake, [str(nb), "--out", str(out)])
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "already holds a batch" in stderr and "Traceback" not in stderr
    proc = run_cli(fake, [str(tmp_path / "missing.ipynb"), "--out", str(tmp_path / "o2")])
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2 and f"error: {tmp_path / 'missing.ipynb'}: no such file" in stderr


def test_a_fatal_worker_problem_stops_the_batch_unrecorded(tmp_path, fake, monkeypatch):
    nbs = [write_nb(tmp_path / "a.ipynb"), write_nb(tmp_path / "b.ipynb", {"mode": "fatal"}),
           write_nb(tmp_path / "c.ipynb"), write_nb(tmp_path / "d.ipynb")]
    kw = dict(out_dir=tmp_path / "out", worker_cmd=fake.cmd, progress=False, timeout=30)
    summary = batch.run_batch([str(p) for p in nbs], **kw)
    assert summary.fatal == "no sandbox on this machine: install bubblewrap"
    assert summary.exit_status == 1 and [r["path"] for r in summary.results] == [str(nbs[0])]
    assert len(fake.calls()) == 2, "nothing is started after the fatal result"
    monkeypatch.setenv("FAKE_MODE", "ok")  # the machine is fixed
    again = batch.run_batch([], resume=True, **kw)
    assert again.exit_status == 0 and again.skipped == 1 and again.graded == 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_kills_workers_keeps_results_and_exits_130(tmp_path, fake, sig):
    pids_file = tmp_path / "pids.json"
    fast = [write_nb(tmp_path / f"fast{i}.ipynb", {"sleep": 0.1}) for i in range(2)]
    hang = write_nb(tmp_path / "hang.ipynb", {"mode": "hang", "pids": str(pids_file)})
    later = [write_nb(tmp_path / f"later{i}.ipynb") for i in range(3)]
    out = tmp_path / "out"
    proc = run_cli(fake, [*map(str, fast + [hang] + later), "--out", str(out), "-j", "2",
                          "--csv", str(tmp_path / "g.csv")])
    try:
        wait_for(lambda: pids_file.exists() and store_rows(out) >= 2 and
                 len(fake.calls()) >= 4, 30, "the hanging worker and two results")
        time.sleep(0.2)
    except BaseException:
        proc.kill()
        raise
    proc.send_signal(sig)
    # the driver waits up to 15 s for killed workers to report, then joins its threads
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    with ResultStore(out, create=False) as store:
        rows = store.all()
    assert all(r["status"] == "ok" for r in rows), "killed workers are not recorded as failures"
    assert {r["path"] for r in rows} >= {str(p) for p in fast}
    assert str(hang) not in {r["path"] for r in rows}
    hang_call = next(c for c in fake.calls() if c["path"].endswith("hang.ipynb"))
    pids = [hang_call["pid"], *json.loads(pids_file.read_text())]
    wait_for(lambda: not any(alive(p) for p in pids), 5, "the hanging worker and its children to die")
    assert not Path(hang_call["result_file"]).parent.exists()
    assert len((tmp_path / "g.csv").read_text().splitlines()) == 1 + len(rows)


STUB_PACKAGE = f"""import sys, types
if "grader" not in sys.modules:
    pkg = types.ModuleType("grader")
    pkg.__path__ = [{str(ROOT / 'grader')!r}]
    sys.modules["grader"] = pkg
"""


@pytest.mark.slow
def test_a_dask_local_cluster_gives_the_results_of_a_local_run(tmp_path, fake):
    dask = pytest.importorskip("dask")
    preload = tmp_path / "stub_grader_package.py"  # as DRIVER: dask workers skip grader/__init__.py
    preload.write_text(STUB_PACKAGE)
    items = [str(write_nb(tmp_path / "subs" / f"s{i}.ipynb", {"score": i / 2})) for i in range(4)]
    items += [str(write_nb(tmp_path / "subs" / "crash.ipynb", {"mode": "crash"})),
              str(tmp_path / "subs" / "missing.ipynb")]
    kw = dict(jobs=2, timeout=60, worker_cmd=fake.cmd, progress=False, run_seed=3,
              worker_args=["--cell-timeout", "9"])
    local = batch.run_batch(items, out_dir=tmp_path / "local", **kw)
    n_local = len(fake.calls())
    t0 = time.monotonic()
    with dask.config.set({"distributed.worker.preload": [str(preload)]}):
        on_local = batch.run_batch(items, out_dir=tmp_path / "dask", scheduler="local", **kw)
        from distributed import LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                          dashboard_address=None) as cluster:  # a cluster reached over TCP
            on_tcp = batch.run_batch(items, out_dir=tmp_path / "tcp",
                                     scheduler=cluster.scheduler_address, **kw)
    assert time.monotonic() - t0 < 25
    for distributed in (on_local, on_tcp):
        assert comparable(distributed.results) == comparable(local.results)
        assert distributed.exit_status == local.exit_status == 2
    calls = fake.calls()[n_local:]
    assert len(calls) == 10 and {c["seed"] for c in calls} == {"3"}
