"""Intake of submitted notebooks: find them, and reject what cannot be graded with a clear reason.

`load_submission` reads one file defensively: the size is checked with `stat` before anything is
read (a 1 GB upload is refused without reading it), then UTF-8, JSON, the notebook's structure and
each cell's nbgrader metadata are checked. Any failure raises `SubmissionError` whose `reason` is
one line meant for the instructor's report (and `str(exc)` is ``"PATH: reason"``).

nbformat 3 (or any major version other than 4) is rejected, not upgraded: the course releases
nbformat 4 notebooks whose test cells carry nbgrader schema-3 metadata, so a v3 file was not saved
from the released notebook by a current Jupyter. The reason tells the student what to do (open it
in Jupyter 4 or later, save, resubmit); silently converting would grade a file the student never
ran in the format it is graded in.

The checks are structural (what grading needs), not a full nbformat schema validation: a notebook
that Jupyter, VS Code or Colab saved is accepted even if its metadata has extra keys.

`inspect_submission` does the same checks without raising and without importing nbformat (whose
import costs about 2 s here); the batch layer uses it to compute each submission's fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

MAX_BYTES = 50 * 2**20
NBGRADER_SCHEMA_VERSION = 3
CELL_TYPES = ("code", "markdown", "raw")
SKIPPED_DIRS = {".ipynb_checkpoints", "__MACOSX"}
CHAPTER_ID = re.compile(r"^\d\d_[a-z0-9_]+$")


class SubmissionError(Exception):
    """A submission that cannot be graded; `reason` is one line, `path` the file (or None)."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


@dataclasses.dataclass
class Submission:
    """What intake learnt about one file. `error` is None when the notebook can be graded."""

    path: Path
    fingerprint: str  # sha256 of the bytes, or a description of why they were not read
    sha256: str | None = None
    size: int | None = None
    data: dict | None = None  # the parsed notebook JSON
    error: str | None = None

    @property
    def chapter_hint(self) -> str | None:
        """A chapter id in the file's name or a folder above it, if any (not checked against the
        registry). The notebook's own metadata is not asked: a submission cannot choose its
        grader."""
        for part in [self.path.stem, *[p.name for p in self.path.parents]]:
            if CHAPTER_ID.match(part):
                return part
        return None


def _human(n: int) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _describe(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
             bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _json_reason(exc: json.JSONDecodeError, text: str) -> str:
    if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
        return (f"not a valid notebook: truncated JSON (the file ends at line {exc.lineno} "
                f"before the notebook is complete; was the upload cut off?)")
    return f"not a valid notebook: corrupt JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"


def _check_structure(nb) -> str | None:
    """The reason `nb` (parsed JSON) is not a gradeable nbformat-4 notebook, or None."""
    if not isinstance(nb, dict):
        return f"not a valid notebook: the top-level JSON value is {_describe(nb)}, not an object"
    major = nb.get("nbformat")
    if major is None:
        return "not a valid notebook: no 'nbformat' version (is this a Jupyter notebook?)"
    if major != 4 or isinstance(major, bool):
        return (f"nbformat {major!r} notebook: only nbformat 4 notebooks can be graded; open it in "
                f"Jupyter 4 or later (JupyterLab, Notebook 7), save it and submit it again")
    if not isinstance(nb.get("metadata", {}), dict):
        return "not a valid notebook: its 'metadata' is not an object"
    cells = nb.get("cells")
    if cells is None:
        return "not a valid notebook: it has no 'cells'"
    if not isinstance(cells, list):
        return f"not a valid notebook: 'cells' is {_describe(cells)}, not a list"
    for i, cell in enumerate(cells, 1):
        if not isinstance(cell, dict):
            return f"not a valid notebook: cell #{i} is {_describe(cell)}, not an object"
        if cell.get("cell_type") not in CELL_TYPES:
            return f"not a valid notebook: cell #{i} has an unknown cell_type {cell.get('cell_type')!r}"
        source = cell.get("source", "")
        if not (isinstance(source, str) or
                isinstance(source, list) and all(isinstance(s, str) for s in source)):
            return f"not a valid notebook: the source of cell #{i} is not text"
        meta = cell.get("metadata", {})
        if not isinstance(meta, dict):
            return f"not a valid notebook: the metadata of cell #{i} is not an object"
        if cell["cell_type"] == "code" and not isinstance(cell.get("outputs", []), list):
            return f"not a valid notebook: the outputs of cell #{i} are not a list"
        nbg = meta.get("nbgrader")
        if nbg is None:
            continue
        where = f"cell #{i}"
        if isinstance(nbg, dict) and isinstance(nbg.get("grade_id"), str):
            where += f" (grade_id {nbg['grade_id']!r})"
        if not isinstance(nbg, dict):
            return f"{where}: its nbgrader metadata is {_describe(nbg)}, not an object"
        version = nbg.get("schema_version", NBGRADER_SCHEMA_VERSION)
        if version != NBGRADER_SCHEMA_VERSION or isinstance(version, bool):
            return (f"{where}: nbgrader metadata schema_version {version!r}, expected "
                    f"{NBGRADER_SCHEMA_VERSION} (the cell's metadata was changed; copy the cell "
                    f"from the released notebook)")
    return None


def inspect_submission(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> Submission:
    """Check one file without raising: `error` says why it cannot be graded (None if it can)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return Submission(path, "missing", error="no such file")
    except OSError as exc:
        return Submission(path, "unreadable", error=f"cannot be read ({exc.strerror or exc})")
    unread = f"unread:size={st.st_size}:mtime_ns={st.st_mtime_ns}"
    if stat.S_ISDIR(st.st_mode):
        return Submission(path, "directory", error="is a directory, not a notebook")
    if path.suffix.lower() != ".ipynb":
        return Submission(path, unread, size=st.st_size,
                          error="not a notebook (expected a .ipynb file)")
    if not stat.S_ISREG(st.st_mode):
        return Submission(path, unread, error="not a regular file")
    if st.st_size > max_bytes:
        return Submission(path, unread, size=st.st_size,
                          error=f"too large ({_human(st.st_size)}; the limit is {_human(max_bytes)}): "
                                f"clear the outputs and submit it again")
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)  # bounded even if the file grew since stat
    except OSError as exc:
        return Submission(path, unread, size=st.st_size,
                          error=f"cannot be read ({exc.strerror or exc})")
    sha = hashlib.sha256(raw).hexdigest()
    sub = Submission(path, sha, sha256=sha, size=len(raw))
    if len(raw) > max_bytes:
        sub.error = f"too large (over the limit of {_human(max_bytes)})"
        return sub
    if not raw.strip():
        sub.error = "not a valid notebook: the file is empty"
        return sub
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        sub.error = "not a valid notebook: UTF-16 text, not UTF-8 (save it from Jupyter)"
        return sub
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        sub.error = (f"not a valid notebook: not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                     f"offset {exc.start})")
        return sub
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        sub.error = _json_reason(exc, text)
        return sub
    except RecursionError:
        sub.error = "not a valid notebook: corrupt JSON (nested too deeply)"
        return sub
    sub.error = _check_structure(data)
    if sub.error is None:
        sub.data = data
    return sub


def to_notebook(data: dict):
    """A `nbformat.NotebookNode` from checked notebook JSON (multi-line sources joined)."""
    from nbformat import v4

    return v4.to_notebook_json(data, minor=data.get("nbformat_minor", 0))


def load_submission(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES):
    """Read a submitted notebook as a `nbformat.NotebookNode`, or raise `SubmissionError`."""
    sub = inspect_submission(path, max_bytes=max_bytes)
    if sub.error is not None:
        raise SubmissionError(sub.error, path)
    try:
        return to_notebook(sub.data)
    except Exception as exc:  # nbformat raises several kinds for odd structures
        raise SubmissionError(f"not a valid notebook ({type(exc).__name__}: {exc})", path) from None


def _notebooks_under(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):  # symlinked directories are not followed
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        found.extend(Path(dirpath, f) for f in sorted(filenames)
                     if f.lower().endswith(".ipynb") and not f.startswith("._"))
    return found


def find_submissions(paths: Iterable) -> list[Path | tuple[str, str]]:
    """Expand directories into the notebooks under them (sorted; `.ipynb_checkpoints` and
    `__MACOSX` skipped); keep files, even bad or missing ones, for `load_submission` to judge.

    A directory with no notebook becomes ``(given, reason)``; such tuples in `paths` pass through.
    The same file named twice (``a.ipynb`` and ``./a.ipynb``, or a file and its directory) is kept
    once, where it first appears.
    """
    out: list[Path | tuple[str, str]] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        ident = os.path.realpath(p)
        if ident not in seen:
            seen.add(ident)
            out.append(p)

    for given in paths:
        if isinstance(given, tuple):
            out.append((str(given[0]), str(given[1])))
            continue
        p = Path(given)
        if p.is_dir():
            nbs = _notebooks_under(p)
            if not nbs:
                out.append((str(given), "no notebooks in this directory"))
            for q in nbs:
                add(q)
        else:
            add(p)
    return out
