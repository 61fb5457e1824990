"""Grading a batch of submissions: one worker process per notebook, results kept as they finish.

    python -m grader grade subs/ -j 4 --out grades/        # grades/grades.sqlite, progress on stderr
    python -m grader grade --resume --out grades/           # after a crash, Ctrl-C or kill -9

How one notebook is graded is the worker's business (`python -m grader _grade-one PATH
--result-file F [worker args]`); this module runs workers and keeps their results:

- Intake first (`grader.intake`): a missing, oversized, corrupt or non-notebook file is recorded as
  a failure with its reason, and no worker is started for it.
- Each worker runs in a new session (its own process group) in a temporary directory that this
  process creates and removes (also after a timeout or Ctrl-C). The worker writes its JSON result to
  `F` in that directory; stdout and stderr go to a log file there, which only supplies the last line
  of a crash report. Nothing is parsed from stdout, so output from a kernel or any descendant
  cannot forge or corrupt a result.
- When a worker ends (or its `timeout` expires) its whole process group is killed with SIGKILL, and
  so is every process whose environment carries the worker's token (`GRADER_BATCH_TOKEN`, the
  temporary directory): that catches descendants that started their own session, and processes
  in PID namespaces below ours (they are still visible in our /proc). A process that scrubs its
  environment and leaves the process group escapes; the sandbox's PID namespace is the real bound.
  On Linux the worker also gets PR_SET_PDEATHSIG=SIGKILL (through an exec trampoline), so a batch
  killed with SIGKILL does not leave workers running (their kernels exit when their parent goes:
  ipykernel polls for it). Temporary directories of a batch killed that way stay in $TMPDIR
  (grader-batch-*).
- Every result is committed to `<out>/grades.sqlite` (`grader.store`) as soon as it arrives, one
  transaction per notebook. `resume=True` skips submissions already recorded (same path, same
  bytes) and reuses the batch's stored settings (worker arguments, timeout, `run_seed`). Without
  `resume`, an existing store is never overwritten: `BatchRefused`, unless `fresh=True`, which moves
  it aside as `grades.sqlite.<time>.bak`.
- Ctrl-C or SIGTERM: no new worker starts, running ones are killed (and not recorded), recorded
  results stay; the summary says `interrupted` and `main` exits with 130 after printing how to
  resume.
- `scheduler="local"` (a dask LocalCluster of `jobs` single-thread worker processes) or
  ``"tcp://host:port"`` runs the same worker command as dask tasks (`run_worker`); the client
  records results as they complete, exactly as in a local run. With a remote cluster the paths must
  be the same on the workers (a shared file system) and `grader` must be installed there;
  cancelled tasks already running on a remote worker end at their timeout.

The worker is given the run's hidden-input seed as the environment variable `GRADER_RUN_SEED`
(stored in the batch's meta, so a resumed batch uses the same seed), and `OMP_NUM_THREADS=1`,
`MKL_NUM_THREADS=1` when `jobs > 1` (unless already set).

Result file written by the worker (JSON; write it to F + ".tmp" and rename, so that a killed
worker leaves no half-written file): one of

    {"ok": {"chapter": ..., "score": ..., "max_score": ..., "exercises": [...]}}
    {"status": "ok", "chapter": ..., "score": ..., "max_score": ..., "exercises": [...]}
    {"error": "reason"}   or   {"status": "error", "reason": ..., "chapter": ..., "max_score": ...}

An error with ``"fatal": true`` is a problem of the grading machine, not of the notebook (no
sandbox, ...): it is not recorded, the batch stops (running workers are killed) and `main` exits
with 1 after saying to fix it and `--resume`.

A valid result file is used even if the worker then exited non-zero or hung after writing it.

Recorded result of one submission (`BatchSummary.results`, the JSON output, the store):

    {"path": str (as given or found under a given directory),
     "status": "ok" | "error",
     "chapter": str | null, "score": number (0 for an error), "max_score": number | null,
     "exercises": [{"name", "score", "max_score", "passed", "feedback", ...}]  ([] for an error),
     "reason": str | null (why it could not be graded; one line),
     "notes": [str] (restarts, limits hit), "cell_errors": [{"cell": n, "error": "Name: text"}]
     (the code cells, test cells not counted, that raised; both only for an ok result),
     "key": str, "sha256": str | null, "elapsed_s": number | null, "graded_at": ISO time}

Exit status of `main`: 0 every submission graded, 2 some could not be graded (or a usage error),
1 refused to start (existing results, another run on --out, nothing to resume, no cluster) or
stopped by a worker's fatal problem, 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None

from grader.intake import MAX_BYTES, find_submissions, inspect_submission
from grader.progress import Progress
from grader.store import ResultStore, set_aside, store_path, submission_key

EXIT_OK, EXIT_REFUSED, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130
TOKEN_VAR = "GRADER_BATCH_TOKEN"  # one per worker: its temporary directory
RUN_VAR = "GRADER_BATCH_RUN"  # one per run of a batch: every worker of the run
SEED_VAR = "GRADER_RUN_SEED"
RESULT_LIMIT = 64 * 2**20  # a larger result file is refused unread
RUNS_DIR = "grader-runs"


def default_worker_cmd() -> list[str]:
    return [sys.executable, "-m", "grader", "_grade-one"]


class BatchRefused(Exception):
    """The batch was not started (its message says why and what to do)."""


class _PoolStartError(Exception):
    pass


class _FatalWorker(Exception):
    """A worker reported a problem of the grading machine (``"fatal": true``): stop the batch."""


# -- killing ---------------------------------------------------------------------------------------
_RUNNING: dict[int, subprocess.Popen] = {}  # pid -> worker, in this process
_STOPPED: set[int] = set()  # workers killed by `stop_workers` (their results are not recorded)
_RUNNING_LOCK = threading.Lock()

# On Linux the worker command is started through this trampoline: it sets PR_SET_PDEATHSIG=SIGKILL
# (kept across exec), checks that its parent is still there, and execs the worker (same pid).
# A trampoline rather than `preexec_fn`, which is unsafe in a process with threads.
_DIE_WITH_PARENT = ("import ctypes, os, sys; ctypes.CDLL(None).prctl(1, 9); "
                    "os.getppid() == int(sys.argv[1]) or os._exit(70); "
                    "os.execvp(sys.argv[2], sys.argv[2:])")


def _with_parent_death_signal(cmd: list[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd]


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_by_env(var: str, value: str) -> int:
    """SIGKILL every process (but this one) started with `var=value` in its environment."""
    if not os.path.isdir("/proc"):
        return 0
    needle = f"{var}={value}".encode()
    killed = 0
    for _ in range(2):  # a second pass catches children forked during the first
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if needle in env.split(b"\0"):
                try:
                    os.kill(int(name), signal.SIGKILL)
                    killed += 1
                except (ProcessLookupError, PermissionError):
                    pass
    return killed


def stop_workers() -> None:
    """Kill every worker this process is running (their results will not be recorded)."""
    with _RUNNING_LOCK:
        procs = list(_RUNNING.values())
        _STOPPED.update(p.pid for p in procs)
    for p in procs:
        _killpg(p.pid)


def _tail(path: str, limit: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            data = f.read()
    except OSError:
        return ""
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def run_worker(cmd: Sequence[str], path: str, worker_args: Sequence[str], timeout: float,
               env: dict | None = None, tmp_root: str | None = None) -> str:
    """Run one worker to completion (or its timeout) and return what happened, as JSON text:
    ``{"result": text of the result file or null, "result_error", "returncode", "timed_out",
    "stopped", "log_tail", "elapsed_s"}``. Its temporary directory is made in `tmp_root` (default:
    the system's) and removed. Also the dask task of a distributed batch."""
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="grader-batch-", dir=tmp_root)
    out = {"result": None, "result_error": None, "returncode": None, "timed_out": False,
           "stopped": False, "log_tail": "", "elapsed_s": None}
    try:
        result_file = os.path.join(tmp, "result.json")
        log_file = os.path.join(tmp, "worker.log")
        full_env = {**os.environ, **(env or {}), TOKEN_VAR: tmp}
        with open(log_file, "wb") as log:
            argv = _with_parent_death_signal([*cmd, path, "--result-file", result_file,
                                              *worker_args])
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
        with _RUNNING_LOCK:
            _RUNNING[proc.pid] = proc
        try:
            try:
                out["returncode"] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                out["timed_out"] = True
                _killpg(proc.pid)
                out["returncode"] = proc.wait()
        finally:
            _killpg(proc.pid)  # descendants left in the worker's process group
            kill_by_env(TOKEN_VAR, tmp)  # ... and those that left it
            with _RUNNING_LOCK:
                _RUNNING.pop(proc.pid, None)
                out["stopped"] = proc.pid in _STOPPED
                _STOPPED.discard(proc.pid)
        try:
            size = os.stat(result_file).st_size
        except OSError:
            size = None
        if size is not None and size > RESULT_LIMIT:
            out["result_error"] = f"the grading process wrote a result of {size} bytes (too large)"
        elif size is not None:
            with open(result_file, "rb") as f:
                raw = f.read()
            try:
                out["result"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                out["result_error"] = "the grading process wrote an invalid result (not UTF-8)"
        out["log_tail"] = _tail(log_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["elapsed_s"] = round(time.monotonic() - t0, 3)
    return json.dumps(out)


# -- results ---------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def error_record(path: str, reason: str, *, key: str, sha256: str | None = None,
                 chapter: str | None = None, max_score: float | None = None,
                 elapsed_s: float | None = None) -> dict:
    return {"path": path, "status": "error", "chapter": chapter, "score": 0,
            "max_score": max_score, "exercises": [], "reason": reason, "key": key,
            "sha256": sha256, "elapsed_s": elapsed_s, "graded_at": _now()}


def _parse_result(text: str, worker_path: str) -> tuple[dict | None, str | None]:
    """(fields of an ok result, None) or (fields of an error result or None, reason)."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return None, f"the grading process wrote an invalid result (not JSON: {detail})"
    if not isinstance(obj, dict):
        return None, "the grading process wrote an invalid result (not a JSON object)"
    if "ok" in obj or obj.get("status") == "ok":
        body = obj["ok"] if "ok" in obj else obj
        problem = None
        if not isinstance(body, dict):
            problem = "the result is not an object"
        elif not (_is_number(body.get("score")) and _is_number(body.get("max_score"))):
            problem = "no numeric score and max_score"
        elif not isinstance(body.get("exercises"), list) or not all(
                isinstance(e, dict) and isinstance(e.get("name"), str) and _is_number(e.get("score"))
                for e in body["exercises"]):
            problem = "no list of exercises with names and scores"
        if problem:
            return None, f"the grading process wrote an invalid result ({problem})"
        fields = {"chapter": body.get("chapter"), "score": body["score"],
                  "max_score": body["max_score"], "exercises": body["exercises"]}
        # what happened while the notebook ran, for the instructor (kept when well formed)
        notes = body.get("notes")
        if isinstance(notes, list) and all(isinstance(n, str) for n in notes):
            fields["notes"] = notes[:20]
        errors = body.get("cell_errors")
        if isinstance(errors, list) and all(
                isinstance(e, dict) and isinstance(e.get("cell"), int)
                and isinstance(e.get("error"), str) for e in errors):
            fields["cell_errors"] = [{"cell": e["cell"], "error": e["error"][:300]}
                                     for e in errors[:200]]
        return fields, None
    if "error" in obj or obj.get("status") == "error":
        reason = obj.get("reason") if "error" not in obj else obj["error"]
        reason = str(reason or "the grading process reported an error without a reason")
        for prefix in (f"{worker_path}: ", f"{os.path.basename(worker_path)}: "):
            if reason.startswith(prefix):
                reason = reason[len(prefix):]
        fields = {k: obj[k] for k in ("chapter", "max_score") if obj.get(k) is not None}
        return fields, reason.strip().splitlines()[0] if reason.strip() else reason
    return None, "the grading process wrote an invalid result (neither 'ok' nor 'error')"


def fatal_reason(outcome_text: str) -> str | None:
    """The reason of a worker result marked ``"fatal": true`` (e.g. no sandbox on this machine:
    every notebook would fail the same way), else None."""
    try:
        obj = json.loads(json.loads(outcome_text).get("result") or "null")
    except (TypeError, ValueError, AttributeError):
        return None
    if isinstance(obj, dict) and obj.get("fatal") is True:
        return str(obj.get("error") or obj.get("reason") or "the grading process reported a "
                   "fatal problem").strip().splitlines()[0]
    return None


def make_record(path: str, outcome_text: str, *, key: str, sha256: str | None, timeout: float,
                worker_path: str, chapter_hint: str | None = None,
                chapter_max: Callable[[str], float | None] | None = None) -> dict:
    """The recorded result of one submission from `run_worker`'s outcome."""
    try:
        out = json.loads(outcome_text)
    except (TypeError, ValueError):
        out = {"crash": f"unreadable outcome {outcome_text!r:.200}"}
    ok_fields, reason, err_fields = None, None, {}
    if out.get("crash"):
        reason = f"the grading process could not be run ({out['crash']})"
    elif out.get("result") is not None:
        fields, reason = _parse_result(out["result"], worker_path)
        if reason is None:
            ok_fields = fields
        else:
            err_fields = fields or {}
    elif out.get("result_error"):
        reason = out["result_error"]
    if ok_fields is None and (out.get("timed_out") or reason is None):
        if out.get("timed_out"):
            reason = f"grading took longer than {timeout:g} s and was stopped"
        else:
            rc = out.get("returncode")
            how = (f"was killed by {signal.Signals(-rc).name}" if isinstance(rc, int) and rc < 0
                   and -rc in signal.Signals._value2member_map_ else f"exited with status {rc}")
            reason = f"the grading process {how} without writing a result"
            if out.get("log_tail"):
                reason += f" (last output: {out['log_tail']})"
    elapsed = out.get("elapsed_s")
    if ok_fields is not None:
        return {"path": path, "status": "ok", **ok_fields, "reason": None, "key": key,
                "sha256": sha256, "elapsed_s": elapsed, "graded_at": _now()}
    chapter = err_fields.get("chapter") or chapter_hint
    max_score = err_fields.get("max_score")
    if max_score is None and chapter and chapter_max is not None:
        max_score = chapter_max(chapter)
    return error_record(path, reason, key=key, sha256=sha256, chapter=chapter, max_score=max_score,
                        elapsed_s=elapsed)


@cache
def registry_max_score(chapter_id: str) -> float | None:
    """The chapter's maximum score from the registry (imports the chapter: slow the first time)."""
    try:
        from grader.registry import get_chapter

        return get_chapter(chapter_id).max_score
    except Exception:
        return None


# -- pools -----------------------------------------------------------------------------------------
class _LocalPool:
    """At most `jobs` workers at once, each waited for by a thread of this process."""

    def __init__(self, jobs: int, done: queue.Queue):
        self.capacity = max(1, jobs)
        self.done = done
        self.threads: list[threading.Thread] = []

    def submit(self, tag: int, args: tuple) -> None:
        t = threading.Thread(target=self._run, args=(tag, args), daemon=True,
                             name=f"grader-worker-{tag}")
        self.threads.append(t)
        t.start()

    def _run(self, tag: int, args: tuple) -> None:
        try:
            text = run_worker(*args)
        except BaseException as exc:  # noqa: BLE001 - reported as the submission's failure
            text = json.dumps({"crash": f"{type(exc).__name__}: {exc}"})
        self.done.put((tag, text))

    def outcome(self, payload) -> str:
        return payload

    def stop(self, run_token: str) -> None:
        stop_workers()
        kill_by_env(RUN_VAR, run_token)

    def close(self) -> None:
        for t in self.threads:
            t.join(timeout=10)


class _DaskPool:
    """The same worker command as tasks on a dask.distributed cluster."""

    def __init__(self, scheduler: str, jobs: int, done: queue.Queue):
        import logging

        from distributed import Client, LocalCluster

        self.done = done
        self.cluster = None
        self.futures = {}
        if scheduler == "local":
            self.cluster = LocalCluster(n_workers=max(1, jobs), threads_per_worker=1,
                                        processes=True, dashboard_address=None,
                                        silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
        else:
            self.client = Client(scheduler, timeout="30s")
        threads = sum(self.client.nthreads().values())
        self.capacity = max(1, threads or jobs)

    def submit(self, tag: int, args: tuple) -> None:
        fut = self.client.submit(run_worker, *args, pure=False, retries=0,
                                 key=f"grade-{tag}-{uuid.uuid4().hex[:8]}")
        self.futures[tag] = fut
        fut.add_done_callback(lambda f, tag=tag: self.done.put((tag, f)))

    def outcome(self, fut) -> str:
        self.futures = {t: f for t, f in self.futures.items() if f is not fut}
        try:
            return fut.result(timeout=60)
        except BaseException as exc:  # noqa: BLE001 - the task failed or was cancelled
            if isinstance(exc, KeyboardInterrupt):
                raise
            return json.dumps({"crash": f"dask task failed: {type(exc).__name__}: {exc}"})

    def stop(self, run_token: str) -> None:
        try:
            self.client.cancel(list(self.futures.values()), force=True)
        except Exception:
            pass
        kill_by_env(RUN_VAR, run_token)  # workers of a cluster on this machine

    def close(self) -> None:
        try:
            self.client.close(timeout=10)
        finally:
            if self.cluster is not None:
                self.cluster.close(timeout=10)


# -- the batch -------------------------------------------------------------------------------------
@dataclasses.dataclass
class BatchSummary:
    out_dir: Path
    results: list[dict]  # one per submission with a result, in the order of the submissions
    total: int  # submissions in the batch
    graded: int  # results produced by this run (ok or error)
    skipped: int  # results taken over from an earlier run (resume)
    interrupted: bool
    settings: dict  # the batch's stored settings (run_seed, worker_args, timeout, paths, ...)
    fatal: str | None = None  # why the batch stopped early (a worker's fatal problem)

    @property
    def ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.results)

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.results if r["status"] != "ok"]

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def remaining(self) -> int:
        return self.total - len(self.results)

    @property
    def store(self) -> Path:
        return store_path(self.out_dir)

    @property
    def exit_status(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.fatal:
            return EXIT_REFUSED
        return EXIT_FAILED if self.failures or self.remaining else EXIT_OK

    def to_json(self) -> dict:
        return {"out_dir": str(self.out_dir), "store": str(self.store),
                "counts": {"total": self.total, "ok": self.ok, "failed": self.failed,
                           "graded": self.graded, "skipped": self.skipped,
                           "remaining": self.remaining},
                "interrupted": self.interrupted, "fatal": self.fatal,
                "exit_status": self.exit_status,
                "settings": self.settings, "submissions": self.results}


def _refusal(out_dir: Path) -> str:
    store = ResultStore(out_dir)
    try:
        n, meta = len(store), store.meta()
    finally:
        store.close()
    started = f", started {meta['created']}" if meta.get("created") else ""
    return (f"{store_path(out_dir)} already holds a batch ({n} results recorded{started}). "
            f"To finish that batch add --resume (what is recorded is not graded again); to start "
            f"a new one add --fresh (the old results are kept as {store_path(out_dir).name}.<time>"
            f".bak); or choose another --out.")


class _OutDirLock:
    """An exclusive lock on `out_dir` for one run of a batch (two runs would grade twice)."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / ".lock"
        self.file = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+")
        if fcntl is not None:
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.file.seek(0)
                who = self.file.read().strip() or "another process"
                self.file.close()
                raise BatchRefused(f"another batch is running in {self.path.parent} ({who}); "
                                   f"wait for it to finish or stop it first") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        self.file.close()  # releases the lock


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run_batch(items: Sequence, *, out_dir, jobs: int = 1, timeout: float = 900,
              worker_args: Sequence[str] = (), resume: bool = False, scheduler: str | None = None,
              progress: bool = True, worker_cmd: Sequence[str] | None = None, fresh: bool = False,
              retry_failed: bool = False, run_seed: int | None = None, settings: dict | None = None,
              max_bytes: int = MAX_BYTES,
              chapter_max: Callable[[str], float | None] | None = registry_max_score,
              stream=None) -> BatchSummary:
    """Grade `items` (paths, directories, or `find_submissions` output); see the module doc.

    Raises `BatchRefused` when `out_dir` already holds a store and neither `resume` nor `fresh` is
    given, or when there is nothing to resume. With `resume`, `worker_args`, `timeout`, `run_seed`
    and `settings` are taken from the store; `items` may be empty (the stored paths are used) or
    add paths to the batch.
    """
    out_dir = Path(out_dir)
    stream = sys.stderr if stream is None else stream
    path = store_path(out_dir)
    if resume and fresh:
        raise BatchRefused("--resume and --fresh contradict each other")
    if resume and not path.exists():
        raise BatchRefused(f"nothing to resume: {path} does not exist")
    with _OutDirLock(out_dir):
        # the workers' temporary directories: those of a run killed with SIGKILL go now
        work = out_dir / ".work"
        shutil.rmtree(work, ignore_errors=True)
        try:
            return _locked(items, out_dir=out_dir, jobs=jobs, timeout=timeout,
                           worker_args=worker_args, resume=resume, scheduler=scheduler,
                           progress=progress, worker_cmd=worker_cmd, fresh=fresh,
                           retry_failed=retry_failed, run_seed=run_seed, settings=settings,
                           max_bytes=max_bytes, chapter_max=chapter_max, stream=stream,
                           work=work)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _locked(items, *, out_dir: Path, jobs, timeout, worker_args, resume, scheduler, progress,
            worker_cmd, fresh, retry_failed, run_seed, settings, max_bytes, chapter_max, stream,
            work: Path) -> BatchSummary:
    path = store_path(out_dir)
    if path.exists() and not resume:
        if not fresh:
            raise BatchRefused(_refusal(out_dir))
        moved = set_aside(out_dir)
        print(f"previous results moved to {moved}", file=stream)
    created = not path.exists()
    store = ResultStore(out_dir)
    discard = False
    try:
        meta = store.meta()
        given = [str(x[0]) if isinstance(x, tuple) else os.fspath(x) for x in items]
        if resume and meta.get("worker_args") is not None:
            worker_args = list(meta["worker_args"])
            timeout = meta["timeout"]
            run_seed = meta["run_seed"]
            settings = meta.get("settings") or {}
            paths = list(meta.get("paths") or [])
            new = [p for p in given if p not in paths]
            if new:
                store.set_meta(paths=paths + new)
            if not items:
                items = paths
        else:
            if run_seed is None:
                run_seed = secrets.randbelow(2**31)
            settings = dict(settings or {})
            store.set_meta(batch_id=uuid.uuid4().hex, created=_now(), paths=given,
                           worker_args=list(worker_args), timeout=timeout, run_seed=run_seed,
                           settings=settings)
        meta = store.meta()
        return _run(store, items, out_dir=out_dir, jobs=jobs, timeout=timeout,
                    worker_args=list(worker_args), resume=resume, retry_failed=retry_failed,
                    scheduler=scheduler, progress=progress,
                    worker_cmd=list(worker_cmd or default_worker_cmd()), run_seed=run_seed,
                    meta=meta, max_bytes=max_bytes, chapter_max=chapter_max, stream=stream,
                    work=work)
    except _PoolStartError as exc:
        discard = created and len(store) == 0  # nothing recorded: leave no store behind
        raise BatchRefused(str(exc)) from None
    finally:
        store.close()
        if discard:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


def _run(store: ResultStore, items, *, out_dir, jobs, timeout, worker_args, resume, retry_failed,
         scheduler, progress, worker_cmd, run_seed, meta, max_bytes, chapter_max, stream,
         work: Path) -> BatchSummary:
    subs = find_submissions(items)
    prog = Progress(len(subs), jobs=jobs, stream=stream, enabled=progress)
    done_keys = store.done_keys() if resume else set()
    redo = store.failed_keys() if resume and retry_failed else set()
    note = f" on dask ({scheduler})" if scheduler else ""
    if resume:
        note += f", resuming {store.path} ({len(done_keys)} results recorded)"
    prog.start(note)
    if not resume:
        prog.message(f"recording results in {store.path}")

    run_token = uuid.uuid4().hex
    env = {SEED_VAR: str(run_seed), RUN_VAR: run_token}
    if jobs > 1 or scheduler:
        env.update({k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k not in os.environ})

    # on this machine, temporary directories go under <out>/.work; on a remote cluster, the workers'
    tmp_root = None if scheduler and scheduler != "local" else os.path.abspath(work)
    if tmp_root is not None:
        os.makedirs(tmp_root, exist_ok=True)
    done: queue.Queue = queue.Queue()
    if scheduler:
        try:
            pool = _DaskPool(scheduler, jobs, done)
        except Exception as exc:
            prog.close()
            what = "start a local dask cluster" if scheduler == "local" else f"reach {scheduler}"
            raise _PoolStartError(f"cannot {what}: {type(exc).__name__}: {exc}") from None
    else:
        pool = _LocalPool(jobs, done)
    pending = deque(enumerate(subs))
    running: dict[int, tuple] = {}  # tag -> (index, path, key, sha256, chapter hint, worker path)
    results: dict[int, dict] = {}
    graded = skipped = 0
    interrupted = stopping = False
    fatal = None
    batch_chapter = (meta.get("settings") or {}).get("chapter")

    def finish(i: int, key: str, path: str, rec: dict) -> None:
        nonlocal graded
        store.record(key, path, rec)
        results[i] = rec
        graded += 1
        prog.finished(path, rec["status"] == "ok")

    def collect(tag: int, payload) -> None:
        i, path, key, sha, hint, wpath = running.pop(tag)
        text = pool.outcome(payload)
        reason = fatal_reason(text)
        if reason is not None and not stopping:
            raise _FatalWorker(reason)  # not recorded: graded on --resume once fixed
        rec = make_record(path, text, key=key, sha256=sha, timeout=timeout, worker_path=wpath,
                          chapter_hint=hint, chapter_max=chapter_max)
        if stopping and rec["status"] != "ok":
            return  # killed or cancelled by Ctrl-C: graded again on --resume
        finish(i, key, path, rec)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term) if _in_main_thread() else None
    try:
        tag = 0
        while pending or running:
            while pending and len(running) < pool.capacity:
                i, item = pending.popleft()
                if isinstance(item, tuple):
                    path, reason = item
                    key, sha, hint, sub = submission_key(path, "no-notebooks"), None, None, None
                else:
                    path = os.fspath(item)
                    sub = inspect_submission(item, max_bytes=max_bytes)
                    key, sha = submission_key(path, sub.fingerprint), sub.sha256
                    hint = batch_chapter or sub.chapter_hint
                    reason = sub.error
                if key in done_keys and key not in redo:
                    rec = store.get(key)
                    if rec is not None:
                        results[i] = rec
                        skipped += 1
                        prog.add_resumed(rec.get("status") == "ok")
                        continue
                if reason is not None:
                    max_score = chapter_max(hint) if hint and chapter_max else None
                    finish(i, key, path, error_record(path, reason, key=key, sha256=sha,
                                                      chapter=hint, max_score=max_score))
                    continue
                tag += 1
                wpath = os.path.abspath(path)
                running[tag] = (i, path, key, sha, hint, wpath)
                pool.submit(tag, (worker_cmd, wpath, worker_args, timeout, env, tmp_root))
            if not running:
                continue
            try:
                t, payload = done.get(timeout=1)
            except queue.Empty:
                prog.tick()
                continue
            collect(t, payload)
    except (KeyboardInterrupt, _FatalWorker) as exc:
        if isinstance(exc, _FatalWorker):
            fatal = str(exc)
        else:
            interrupted = True
        stopping = True
        old = ({s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
               if _in_main_thread() else {})  # a second Ctrl-C does not stop the clean-up
        try:
            if running:
                pool.stop(run_token)
                deadline = time.monotonic() + 15
                while running and time.monotonic() < deadline:
                    try:
                        t, payload = done.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    collect(t, payload)  # a result that arrived in time is kept
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        prog.close()
        try:
            pool.close()
        except Exception as exc:  # noqa: BLE001 - closing a cluster must not hide the results
            print(f"warning: closing the workers failed: {exc}", file=stream)
    settings = {k: meta.get(k) for k in ("batch_id", "created", "paths", "worker_args", "timeout",
                                         "run_seed", "settings")}
    return BatchSummary(out_dir=Path(out_dir), results=[results[i] for i in sorted(results)],
                        total=len(subs), graded=graded, skipped=skipped, interrupted=interrupted,
                        settings=settings, fatal=fatal)


# -- output ----------------------------------------------------------------------------------------
def write_json(summary: BatchSummary, file=None) -> None:
    """The summary and every result as JSON (on stdout by default)."""
    file = sys.stdout if file is None else file
    json.dump(summary.to_json(), file, indent=2)
    file.write("\n")
    file.flush()


def write_csv(path, results: Sequence[dict]) -> None:
    """One row per submission: path, chapter, status, score, max_score, each exercise's score (in
    order of first appearance), reason (empty when graded)."""
    names: list[str] = []
    for r in results:
        names += [e["name"] for e in r.get("exercises", []) if e["name"] not in names]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "chapter", "status", "score", "max_score", *names, "reason"])
        for r in results:
            scores = {e["name"]: e["score"] for e in r.get("exercises", [])}
            writer.writerow([r["path"], r.get("chapter") or "", r["status"], r["score"],
                             "" if r.get("max_score") is None else r["max_score"],
                             *[scores.get(n, "") for n in names], r.get("reason") or ""])


def _g(x) -> str:
    return "?" if x is None else f"{x:g}"


def format_table(results: Sequence[dict]) -> str:
    lines = []
    for r in results:
        if r["status"] != "ok":
            lines.append(f"{r['path']}  [{r.get('chapter') or '?'}]  NOT GRADED: {r['reason']}")
            lines.append("")
            continue
        lines.append(f"{r['path']}  [{r['chapter']}]  score {_g(r['score'])} / {_g(r['max_score'])}")
        width = max((len(e["name"]) for e in r["exercises"]), default=10)
        for e in r["exercises"]:
            passed = e.get("passed", e["score"] >= e.get("max_score", e["score"]))
            mark = "ok  " if passed else "FAIL"
            lines.append(f"  {mark} {e['name']:<{width}}  {e['score']:>5g} / "
                         f"{_g(e.get('max_score'))}")
            feedback = str(e.get("feedback") or "")
            if not passed and feedback:
                lines.extend("         " + ln for ln in feedback.splitlines()[1:] or
                             feedback.splitlines())
        lines.append("")
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------------
def _latest_run(base: Path) -> Path | None:
    runs = sorted(p for p in base.glob("*") if store_path(p).exists()) if base.is_dir() else []
    return runs[-1] if runs else None


def _new_run_dir(base: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out, n = base / stamp, 1
    while out.exists():
        n += 1
        out = base / f"{stamp}-{n}"
    return out


def build_parser(prog: str = "python -m grader grade") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Grade submitted notebooks (files or "
                                "directories); results are recorded as each notebook finishes.")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--out", metavar="DIR", help=f"where results are recorded (DIR/grades.sqlite; "
                   f"default: a new {RUNS_DIR}/<time>, or with --resume the latest one)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="notebooks graded at once (default 1)")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds allowed for one notebook (default 900)")
    p.add_argument("--cell-timeout", type=int, default=120,
                   help="seconds allowed for one cell; a slower cell is interrupted (default 120)")
    p.add_argument("--no-fast", dest="fast", action="store_false",
                   help="run training cells at full length (default: GRADER_FAST=1)")
    p.add_argument("--chapter", help="the chapter every submission was handed in for (default: "
                   "a folder or file name that is a chapter id)")
    p.add_argument("--memory-gib", type=float, help="memory allowed for one notebook's kernel")
    p.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                   help="run notebooks without the sandbox (trusted submissions only)")
    p.add_argument("--seed", type=int, help="the hidden-input seed (default: random, recorded)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="finish the batch recorded in --out with its settings; recorded "
                      "submissions (same path, same bytes) are not graded again")
    mode.add_argument("--fresh", action="store_true",
                      help="start a new batch even if --out holds one (kept as a .bak file)")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume: grade again the submissions recorded as failures")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="grade on a dask cluster: tcp://host:port, or 'local' for a local "
                   "cluster of -j processes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--csv", metavar="FILE", help="also write the scores to a CSV file")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--gradebook", metavar="COURSE_DIR",
                   help="also record the scores in that nbgrader course's gradebook.db")
    p.add_argument("--feedback", metavar="DIR",
                   help="also write a feedback page per submission to DIR/<student>/<chapter>.html")
    return p


def main(argv: Sequence[str] | None = None, worker_cmd: Sequence[str] | None = None) -> int:
    """`python -m grader grade ...` (see `build_parser`); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.timeout <= 0:
        parser.error("-j must be at least 1 and --timeout positive")
    if args.retry_failed and not args.resume:
        parser.error("--retry-failed goes with --resume")
    if not args.paths and not args.resume:
        parser.error("give the notebooks or directories to grade (or --resume)")
    base = Path(RUNS_DIR)
    if args.out is not None:
        out = Path(args.out)
    elif args.resume:
        out = _latest_run(base)
        if out is None:
            print(f"error: nothing to resume: no batch under {base}/ (give --out DIR)",
                  file=sys.stderr)
            return EXIT_REFUSED
    else:
        out = _new_run_dir(base)
    worker_args = ["--cell-timeout", str(args.cell_timeout)]
    worker_args += [] if args.fast else ["--no-fast"]
    worker_args += [] if args.chapter is None else ["--chapter", args.chapter]
    worker_args += [] if args.memory_gib is None else ["--memory-gib", f"{args.memory_gib:g}"]
    worker_args += [] if args.sandbox else ["--no-sandbox"]
    # the worker stops the notebook itself before the batch's kill, keeping the marks earned
    worker_args += ["--notebook-timeout", f"{max(10.0, args.timeout * 0.85 - 5):g}"]
    try:
        summary = run_batch(args.paths, out_dir=out, jobs=args.jobs, timeout=args.timeout,
                            worker_args=worker_args, resume=args.resume, fresh=args.fresh,
                            retry_failed=args.retry_failed, scheduler=args.scheduler,
                            progress=not args.quiet, worker_cmd=worker_cmd, run_seed=args.seed,
                            settings={"chapter": args.chapter} if args.chapter else None)
    except BatchRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:  # an unwritable --out
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:  # before grading started
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.csv:
        write_csv(args.csv, summary.results)
    if args.gradebook or args.feedback:
        from grader.gradebook import export_to_gradebook, write_feedback

        if args.feedback:
            write_feedback(Path(args.feedback), summary.results)
        for problem in export_to_gradebook(Path(args.gradebook), summary.results) \
                if args.gradebook else []:
            print(f"gradebook: {problem}", file=sys.stderr)
    if args.json:
        write_json(summary)
    else:
        print(format_table([r for r in summary.results if r["status"] == "ok"]))
    for r in summary.failures:
        print(f"error: {r['path']}: {r['reason']}", file=sys.stderr)
    print(f"{summary.ok} graded, {summary.failed} not graded"
          + (f", {summary.skipped} taken from the earlier run" if summary.skipped else "")
          + f"; results in {summary.store}", file=sys.stderr)
    if summary.fatal:
        print(f"error: grading stopped: {summary.fatal}\nFix this and run the same command with "
              f"--resume (--out {out}) to grade the rest.", file=sys.stderr)
    if summary.interrupted:
        print(f"interrupted: {len(summary.results)} of {summary.total} submissions are recorded in "
              f"{summary.store}; to grade the rest run the same command with --resume "
              f"(--out {out})", file=sys.stderr)
    return summary.exit_status
