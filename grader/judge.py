"""Grading one submitted notebook: run it where it cannot see the answers, judge it here.

The notebook's own cells run in a fresh kernel (in a sandbox, see `grader.sandbox`) whose
`grader` package is the student's: no reference, no hidden check. Test cells are never run
there. At each test cell's place the grader's process runs the exercise's hidden check, which
calls the student's code through the kernel's observer (`grader.observe`) on inputs drawn from
a seed of this grading run, and compares what comes back with the references, here.

Nothing the notebook prints, displays or defines is taken as a verdict. What it says through
the observer is plain data (`grader.wire`), judged against references on inputs it never saw.

The answer cells are also read as source (`static_findings`): a kernel that switches off the
in-kernel watch over forbidden calls gains nothing, and importing the instructor's code is
caught even where the sandbox is not used.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import queue
import secrets
import shutil
import sysconfig
import tempfile
import time
from pathlib import Path

from grader import remote as remote_mod
from grader.registry import Chapter, Exercise, get_chapter
from grader.runner import LiveRefs, Verdict, run_check

ROOT = Path(__file__).resolve().parent

# What a student's kernel gets of the grader package (also what a student edition ships).
PUBLIC_MODULES = ("__init__.py", "check.py", "feedback.py", "runner.py", "remote.py", "observe.py",
                  "wire.py", "cases.py", "course.py", "registry.py", "plot.py")
PUBLIC_PACKAGES = ("data", "checks", "probes")
INSTRUCTOR_MODULES = ("grader.chapters", "grader.judge", "grader.grade", "grader.testing",
                      "grader.edition", "grader.assign", "grader.bench", "grader.cli",
                      "grader.nbgrader_plugin", "grader.sandbox", "grader.batch",
                      "grader.instructor", "grader.gradebook")


def copy_public_package(dest: Path, recorded: Path | None = None) -> Path:
    """Copy the student's part of `grader` to dest/grader; return dest (for PYTHONPATH)."""
    target = dest / "grader"
    target.mkdir(parents=True, exist_ok=True)
    for name in PUBLIC_MODULES:
        shutil.copy2(ROOT / name, target / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PUBLIC_PACKAGES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, target / name, ignore=ignore, dirs_exist_ok=True)
    if recorded is not None and recorded.is_dir():
        shutil.copytree(recorded, target / "recorded", ignore=ignore, dirs_exist_ok=True)
    return dest


_PUBLIC_CACHE: dict[str, Path] = {}


def public_package() -> Path:
    """A per-process copy of the student's package for grading kernels."""
    key = "public"
    if key not in _PUBLIC_CACHE or not (_PUBLIC_CACHE[key] / "grader").is_dir():
        dest = copy_public_package(Path(tempfile.mkdtemp(prefix="grader-public-")))
        for path in [dest, *dest.rglob("*")]:  # readable by the sandbox's own user
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        _PUBLIC_CACHE[key] = dest
    return _PUBLIC_CACHE[key]


# --- the notebook: cells to run, places to judge ---------------------------------------------

@dataclasses.dataclass
class Plan:
    cells: list[str]  # code to run, in order
    judge_after: dict[int, list[str]]  # index in `cells` -> exercises judged after it ran
    sources: list[str]  # every code cell that is not a test cell (for static checks)


def plan(nb, chapter: Chapter) -> Plan:
    """Split a submission into the code it runs and the places where exercises are judged.

    A test cell (graded, not a solution) is recognised by its nbgrader grade id; its source is
    never run. Unknown and duplicated test cells are dropped; the exercises whose test cells
    were deleted are judged at the end.
    """
    cells: list[str] = []
    judge_after: dict[int, list[str]] = {}
    judged: set[str] = set()
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {}) or {}
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if meta.get("grade") and not meta.get("solution"):
            ex = chapter.by_grade_id(str(meta.get("grade_id", "")))
            if ex is not None and ex.name not in judged:
                judged.add(ex.name)
                judge_after.setdefault(len(cells) - 1, []).append(ex.name)
            continue
        cells.append(source)
    rest = [name for name in chapter.exercises if name not in judged]
    if rest:
        judge_after.setdefault(len(cells) - 1, []).extend(rest)
    return Plan(cells, judge_after, list(cells))


# --- reading the answers as source ------------------------------------------------------------

def _names_in(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _instructor_import(node) -> bool:
    def bad(module: str) -> bool:
        return any(module == m or module.startswith(m + ".") for m in INSTRUCTOR_MODULES)

    if isinstance(node, ast.Import):
        return any(bad(a.name) for a in node.names)
    if isinstance(node, ast.ImportFrom) and node.module:
        if bad(node.module):
            return True
        return node.module == "grader" and any(
            bad(f"grader.{a.name}") for a in node.names)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return any(m in node.value for m in INSTRUCTOR_MODULES) or node.value in (
            "chapters", "grader/chapters")
    return False


def static_findings(sources: list[str], exercises: dict[str, dict]) -> dict[str, str]:
    """{exercise: what its source does that it must not} for the answers of a notebook.

    `exercises` maps an exercise to what its check forbade: {"torch": [[path, label]...],
    "python": [[module, names, label]...]} (as the check's guards said).
    """
    trees = []
    for src in sources:
        try:
            trees.append(ast.parse(src))
        except SyntaxError:
            trees.append(None)
    defs: dict[str, ast.AST] = {}
    def_tree: dict[str, ast.AST] = {}
    aliases: dict[str, str] = {}  # local name -> module it stands for
    instructor_names: set[str] = set()
    instructor_cells: list[ast.AST] = []
    for tree in trees:
        if tree is None:
            continue
        for node in ast.walk(tree):
            if _instructor_import(node):
                instructor_cells.append(tree)
                if isinstance(node, ast.Import | ast.ImportFrom):
                    instructor_names |= {(a.asname or a.name).split(".")[0] for a in node.names}
            if isinstance(node, ast.Import):
                for a in node.names:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else \
                        a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defs[node.name] = node
                def_tree[node.name] = tree
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        defs[target.id] = node
                        def_tree[target.id] = tree
    own_methods = {n.name for node in defs.values() for n in ast.walk(node)
                   if isinstance(n, ast.FunctionDef)}
    own_methods |= {t.attr for node in defs.values() for n in ast.walk(node)
                    if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Attribute)}

    def closure(name: str) -> list[ast.AST]:
        seen, todo, out = set(), [name], []
        while todo:
            n = todo.pop()
            if n in seen or n not in defs:
                continue
            seen.add(n)
            out.append(defs[n])
            todo.extend(_names_in(defs[n]) - seen)
        return out

    def qualified(node) -> str | None:
        dotted = _dotted(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        if head in aliases:
            return aliases[head] + ("." + rest if rest else "")
        return dotted

    findings: dict[str, str] = {}
    for name, forbidden in exercises.items():
        nodes = closure(name)
        if not nodes:
            continue
        if any(_names_in(node) & instructor_names for node in nodes) or any(
                def_tree.get(n) in instructor_cells for n in [name]):
            findings[name] = ("uses the instructor's grading code (grader.chapters and its "
                              "relatives are not part of an answer)")
            continue
        torch_paths = {path: label for path, label in forbidden.get("torch", [])}
        methods = {p.rsplit(".", 1)[1]: label for p, label in torch_paths.items()
                   if p.startswith("torch.Tensor.")}
        functions = {p: label for p, label in torch_paths.items()
                     if not p.startswith("torch.Tensor.")}
        libs = [(m, set(n) if n is not None else None, label)
                for m, n, label in forbidden.get("python", [])]
        used: list[str] = []
        for node in nodes:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Attribute | ast.Name):
                    q = qualified(sub)
                    if q is None:
                        continue
                    q = q.replace("torch.nn.functional", "torch.nn.functional")
                    if q in functions:
                        used.append(functions[q])
                    for module, names, label in libs:
                        if q == module or q.startswith(module + "."):
                            leaf = q.rsplit(".", 1)[-1]
                            if names is None or leaf in names:
                                used.append(f"{leaf} (from {label or module})" if names
                                            else (label or module))
                if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute)
                        and sub.func.attr in methods and sub.func.attr not in own_methods):
                    q = qualified(sub.func.value)
                    if q is None or not q.startswith("torch"):
                        used.append(methods[sub.func.attr])
        if used:
            shown = ", ".join(dict.fromkeys(used))
            findings[name] = (f"your code calls {shown}, which this exercise asks you to write "
                              "yourself (found by reading your code)")
    return findings


# --- running the notebook's cells -------------------------------------------------------------

@dataclasses.dataclass
class Options:
    cell_timeout: float = 120.0
    timeout: float = 900.0  # the whole notebook
    exercise_timeout: float = 120.0
    fast: bool = True
    salt: int | None = None  # the run's seed for hidden inputs (drawn when None)
    sandbox: bool = True
    memory_bytes: int = 4 * 2**30
    output_cap: int = 1 << 20  # bytes of output kept per cell (the rest is counted, dropped)
    notebook_output_cap: int = 8 << 20
    message_cap: int = 16 << 20  # one message from the kernel larger than this is refused
    max_restarts: int = 3


FIRST_ANSWER = 10.0  # seconds for a kernel to start answering a check (its observer is idle)


class KernelGone(Exception):
    """The kernel died or had to be killed."""


class Session:
    """One kernel running one notebook's cells (restartable)."""

    def __init__(self, workdir: Path, options: Options):
        self.workdir = workdir
        self.options = options
        self.kernel = None
        self.client = None
        self.output_bytes = 0
        self.needs_restart = False

    def start(self):
        from grader.sandbox import GradingKernel, Limits

        env = {"GRADER_FAST": "1" if self.options.fast else "0", "MPLBACKEND": "Agg",
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1")}
        # The kernel's Python skips site processing, so an editable install of this repository
        # (a .pth file) cannot bring the instructor's modules back; site-packages is on the path.
        self.kernel = GradingKernel(self.workdir, sandbox=self.options.sandbox,
                                    limits=Limits(memory_bytes=self.options.memory_bytes),
                                    python_path=[public_package(), *map(Path, site_packages())],
                                    env=env, no_site=True,
                                    # one 100 MB print never reaches the grader's memory
                                    message_cap=self.options.message_cap)
        self.client = self.kernel.start()
        return self.client

    def restart(self):
        self.client = self.kernel.restart()
        self.needs_restart = False
        return self.client

    def close(self):
        if self.kernel is not None:
            self.kernel.kill()

    def reconnect_iopub(self) -> None:
        kc = self.client
        channel = getattr(kc, "_iopub_channel", None)
        if channel is not None:
            channel.close()
            kc._iopub_channel = None
        kc.iopub_channel  # noqa: B018 - connects and subscribes a new socket
        time.sleep(0.2)  # a new subscriber misses what is published before it has joined

    def run(self, code: str, timeout: float) -> dict:
        """Run one cell; return {"error": "Name: value" or None, "timed_out": bool}.

        The cell is done when the kernel says idle on iopub, or when its execute reply has come
        on the shell channel (iopub may have dropped an oversized message) and a moment passed.
        """
        kc = self.client
        msg_id = kc.execute(code, silent=False, store_history=True, allow_stdin=False)
        deadline = time.monotonic() + timeout
        error, interrupted, cell_bytes, replied = None, False, 0, None
        while True:
            now = time.monotonic()
            if replied is not None and now - replied > 1.0:
                # the reply came but iopub fell silent: ZeroMQ dropped an oversized message
                # and with it the connection; connect iopub again
                self.reconnect_iopub()
                self.output_bytes += self.options.message_cap
                if self.output_bytes > self.options.notebook_output_cap:
                    raise KernelGone("the notebook printed more output than allowed "
                                     f"({self.options.notebook_output_cap // 2**20} MB)")
                break
            left = deadline - now
            if left <= 0:
                if interrupted:
                    raise KernelGone(f"a cell ran longer than {timeout:g} s and did not stop "
                                     "when interrupted")
                self.kernel.interrupt()
                interrupted = True
                deadline = time.monotonic() + 5
                continue
            if replied is None:
                try:
                    reply = kc.get_shell_msg(timeout=0)
                    if reply.get("parent_header", {}).get("msg_id") == msg_id:
                        replied = time.monotonic()
                        content = reply.get("content", {})
                        if content.get("status") == "error" and error is None:
                            error = (f"{content.get('ename')}: "
                                     f"{remote_mod.scrub(str(content.get('evalue')))}")
                except queue.Empty:
                    pass
            try:
                msg = kc.get_iopub_msg(timeout=min(left, 0.2))
            except queue.Empty:
                if not self.kernel.alive():
                    raise KernelGone("the kernel died") from None
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind in ("stream", "display_data", "execute_result", "update_display_data"):
                size = len(str(content.get("text", ""))) + sum(
                    len(str(v)) for v in content.get("data", {}).values())
                cell_bytes += size
                self.output_bytes += size
                if self.output_bytes > self.options.notebook_output_cap:
                    raise KernelGone(f"the notebook printed more than "
                                     f"{self.options.notebook_output_cap // 2**20} MB of output")
            elif kind == "error":
                error = f"{content.get('ename')}: {remote_mod.scrub(str(content.get('evalue')))}"
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        if interrupted:
            error = f"stopped after {timeout:g} s (time limit of a cell)"
        return {"error": error, "timed_out": interrupted, "output_bytes": cell_bytes}


class _Observed(remote_mod.Remote):
    """A remote that remembers the restrictions the check asked for (for the source check)."""

    def __init__(self, transport):
        super().__init__(transport)
        self.forbidden = {"torch": [], "python": []}

    def request(self, req):
        guard = req.get("guard") if isinstance(req, dict) else None
        if isinstance(guard, dict):
            for key in ("torch", "python"):
                for entry in guard.get(key, []):
                    if entry not in self.forbidden[key]:
                        self.forbidden[key].append(entry)
        return super().request(req)


def _judge(session: Session, chapter: Chapter, exercise: Exercise, salt: int,
           deadline: float, options: Options) -> tuple[Verdict, dict, int]:
    """Run an exercise's hidden check here, observing the student's code in the kernel."""
    budget = max(1.0, min(options.exercise_timeout, deadline - time.monotonic()))
    path = str(session.workdir / f".observe-{secrets.token_hex(4)}.sock")
    link = remote_mod.SocketSession(session.client, path, timeout=budget,
                                    start_timeout=FIRST_ANSWER)
    remote = _Observed(link)
    try:
        full, link.deadline = link.deadline, min(link.deadline, time.monotonic() + FIRST_ANSWER)
        try:
            answer = remote.global_(exercise.name)  # no student code runs: answered at once
            link.deadline = full
        except KeyError:
            return Verdict(exercise.name, 0.0, exercise.points,
                           f"{exercise.name}: not defined. Run (and fix) the cell that defines "
                           "it."), remote.forbidden, remote.requests
        verdict = run_check(exercise, answer, hidden=True, remote_=remote,
                            refs=LiveRefs(chapter.references), salt=salt)
        return verdict, remote.forbidden, remote.requests
    finally:
        if not link.close():
            session.needs_restart = True


def grade_notebook_node(nb, chapter_id: str, options: Options | None = None,
                        workdir: Path | None = None) -> dict:
    """Grade a parsed notebook submitted for `chapter_id` (the assignment, not its metadata)."""
    options = options or Options()
    chapter = get_chapter(chapter_id)
    if not chapter.instructor:
        raise RuntimeError("grading needs the instructor's references (grader.chapters)")
    salt = options.salt if options.salt is not None else secrets.randbits(63)
    p = plan(nb, chapter)
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="grade-")) if own_dir else workdir
    verdicts: dict[str, Verdict] = {}
    forbidden: dict[str, dict] = {}
    notes: list[str] = []
    deadline = time.monotonic() + options.timeout
    session = Session(workdir, options)
    completed: list[int] = []  # cells that ran (replayed after a restart)
    cell_errors: list[dict] = []  # {"cell": code cell number (test cells not counted), "error"}
    restarts = 0
    timing = {"kernel_start": 0.0, "cells": 0.0, "checks": 0.0, "requests": 0}
    try:
        t0 = time.perf_counter()
        session.start()
        timing["kernel_start"] = time.perf_counter() - t0
        i = -1
        pending = list(p.judge_after.get(-1, []))

        def judge_pending():
            nonlocal restarts
            while pending:
                name = pending.pop(0)
                ex = chapter.exercises[name]
                if time.monotonic() > deadline:
                    verdicts[name] = Verdict(name, 0.0, ex.points,
                                             f"{name}: not graded: the notebook used up its "
                                             f"time ({options.timeout:g} s).")
                    continue
                t0 = time.perf_counter()
                try:
                    verdicts[name], forbidden[name], n = _judge(session, chapter, ex, salt,
                                                                deadline, options)
                    timing["checks"] += time.perf_counter() - t0
                    timing["requests"] += n
                except remote_mod.RemoteFailure as exc:
                    verdicts[name] = Verdict(name, 0.0, ex.points,
                                             f"{name}: could not be graded: {exc}.")
                    session.needs_restart = True
                if session.needs_restart:
                    if restarts >= options.max_restarts:
                        raise KernelGone("the kernel had to be restarted too often")
                    restarts += 1
                    notes.append(f"the kernel was restarted after checking {name}")
                    session.restart()
                    replay()

        def replay():
            for j in completed:
                try:
                    session.run(p.cells[j], options.cell_timeout)
                except KernelGone:
                    break

        while True:
            judge_pending()
            i += 1
            if i >= len(p.cells):
                break
            pending.extend(p.judge_after.get(i, []))
            if time.monotonic() > deadline:
                continue
            try:
                t0 = time.perf_counter()
                ran = session.run(p.cells[i], min(options.cell_timeout,
                                                  max(1.0, deadline - time.monotonic())))
                timing["cells"] += time.perf_counter() - t0
                if ran["error"]:
                    cell_errors.append({"cell": i + 1, "error": ran["error"]})
                completed.append(i)
            except KernelGone as exc:
                if restarts >= options.max_restarts:
                    notes.append(f"cell {i + 1}: {exc}; grading stopped")
                    break
                restarts += 1
                notes.append(f"code cell {i + 1}: {exc}; the kernel was restarted and the "
                             "notebook continued without that cell")
                session.restart()
                replay()
    except KernelGone as exc:
        notes.append(str(exc))
    finally:
        session.close()
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    findings = static_findings(p.sources, forbidden)
    exercises = []
    for name, ex in chapter.exercises.items():
        why = "; ".join(notes) or "the notebook stopped before its check"
        v = verdicts.get(name) or Verdict(name, 0.0, ex.points,
                                          f"{name}: could not be graded ({why}).")
        if name in findings:  # what the source shows counts even if the kernel hid it
            rest = "" if v.passed else "\n" + v.feedback
            v = Verdict(name, 0.0, ex.points, f"{name}: {findings[name]}.{rest}", v.checks)
        exercises.append(v.to_json())
    return {"chapter": chapter.id, "score": round(sum(e["score"] for e in exercises), 2),
            "max_score": chapter.max_score, "exercises": exercises, "notes": notes,
            "cell_errors": cell_errors,
            "timing": {k: round(v, 3) for k, v in timing.items()}}






def site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))
