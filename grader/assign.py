"""Authoring and release: solutions/<chapter>/ (nbgrader source) -> chapters/<chapter>/.

`release` runs nbgrader's generate_assignment with the course's nbgrader_config.py and a
throw-away gradebook, so chapters/ is exactly what nbgrader produces (solutions replaced by stubs,
hidden tests removed, outputs cleared, checksums added). `check_release` regenerates into a
temporary directory and lists every difference with chapters/.

The cell builders below give the nbgrader v3 metadata every chapter uses, so that authoring
scripts and tests agree on it.
"""

from __future__ import annotations

import filecmp
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOURCE, RELEASE = "solutions", "chapters"


def use_environment_path() -> None:
    """nbgrader runs `alembic` and kernels by name: find them next to this interpreter."""
    import os
    import sys

    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def nbgrader_api(root: Path, release_dir: Path, db: Path):
    use_environment_path()
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config, PyFileConfigLoader

    config = Config()
    if (ROOT / "nbgrader_config.py").exists():
        config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config())
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.source_directory = SOURCE
    config.CourseDirectory.release_directory = str(release_dir)
    config.CourseDirectory.db_url = f"sqlite:///{db}"
    config.Exchange.root = str(db.parent / "exchange")
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir=coursedir, config=config)


def source_chapters() -> list[str]:
    return sorted(p.name for p in (ROOT / SOURCE).iterdir()
                  if p.is_dir() and not p.name.startswith("."))


def generate(chapters: list[str] | None, release_dir: Path) -> list[Path]:
    """Generate student notebooks for `chapters` (default all) under `release_dir`."""
    chapters = chapters or source_chapters()
    written = []
    with tempfile.TemporaryDirectory(prefix="release-") as tmp:
        api = nbgrader_api(ROOT, release_dir, Path(tmp) / "gradebook.db")
        for cid in chapters:
            if not (ROOT / SOURCE / cid).is_dir():
                raise SystemExit(f"no chapter {cid!r} in {SOURCE}/")
            result = api.generate_assignment(cid, force=True, create=True)
            if not result.get("success"):
                raise SystemExit(f"nbgrader could not generate {cid}:\n{result.get('log', '')}"
                                 f"{result.get('error', '')}")
            written.extend(sorted((release_dir / cid).rglob("*.ipynb")))
    return written


def _committed(path: Path) -> bytes | None:
    """The file as the repository's last commit has it (None outside git or if untracked)."""
    import subprocess

    try:
        rel = path.resolve().relative_to(ROOT)
        out = subprocess.run(["git", "-C", str(ROOT), "show", f"HEAD:{rel.as_posix()}"],
                             capture_output=True, timeout=30)
    except (ValueError, OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


class WouldOverwrite(SystemExit):
    """`release` refused to replace notebooks that someone edited."""


def release(chapters: list[str] | None = None, force: bool = False) -> list[Path]:
    """Regenerate chapters/ from solutions/ without losing anyone's work.

    A notebook in chapters/ is replaced only when it is what the repository committed (so
    nobody edited it) or when `force` is given; then the edited one is kept next to it as
    `<name>.backup-<time>.ipynb`. Files that nbgrader does not generate are never deleted.
    """
    import shutil
    import time

    chapters = chapters or source_chapters()
    written, refused = [], []
    with tempfile.TemporaryDirectory(prefix="release-") as tmp:
        fresh = Path(tmp) / "release"
        generate(chapters, fresh)
        plans = []
        for cid in chapters:
            for new in sorted((fresh / cid).rglob("*")):
                if not new.is_file():
                    continue
                old = ROOT / RELEASE / cid / new.relative_to(fresh / cid)
                if old.exists() and old.read_bytes() == new.read_bytes():
                    continue
                edited = old.exists() and _committed(old) != old.read_bytes()
                if edited and not force:
                    refused.append(old)
                plans.append((new, old, edited))
        if refused:
            listing = "\n".join(f"  {p.relative_to(ROOT)}" for p in refused)
            raise WouldOverwrite(
                f"these notebooks were changed since they were generated (someone's work?):\n"
                f"{listing}\nNothing was written. Save that work elsewhere (students work in the "
                "student edition: `make edition`), or run `python -m grader release --force`, "
                "which keeps each changed notebook as a .backup file beside the new one.")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for new, old, edited in plans:
            old.parent.mkdir(parents=True, exist_ok=True)
            if edited:
                backup = old.with_name(f"{old.stem}.backup-{stamp}{old.suffix}")
                shutil.copy2(old, backup)
                print(f"kept your changed {old.relative_to(ROOT)} as {backup.name}")
            shutil.copyfile(new, old)
            written.append(old)
    return written


def check_release(chapters: list[str] | None = None) -> list[str]:
    """Differences between chapters/ and a fresh generation; empty when in step."""
    chapters = chapters or source_chapters()
    problems = []
    with tempfile.TemporaryDirectory(prefix="release-check-") as tmp:
        fresh = Path(tmp) / "release"
        generate(chapters, fresh)
        for cid in chapters:
            cmp = filecmp.dircmp(fresh / cid, ROOT / RELEASE / cid) \
                if (ROOT / RELEASE / cid).is_dir() else None
            if cmp is None:
                problems.append(f"{RELEASE}/{cid}/ is missing")
                continue
            problems += _differences(cmp, f"{RELEASE}/{cid}")
        extra = {p.name for p in (ROOT / RELEASE).iterdir()
                 if p.is_dir() and not p.name.startswith(".")} - set(source_chapters())
        problems += [f"{RELEASE}/{name}/ has no source in {SOURCE}/" for name in sorted(extra)]
    return problems


def _differences(cmp: filecmp.dircmp, where: str) -> list[str]:
    out = [f"{where}/{n}: differs" for n in cmp.diff_files]
    out += [f"{where}/{n}: missing" for n in cmp.left_only]
    out += [f"{where}/{n}: not generated from {SOURCE}/" for n in cmp.right_only
            if n != ".ipynb_checkpoints"]
    for name, sub in cmp.subdirs.items():
        out += _differences(sub, f"{where}/{name}")
    # dircmp compares shallowly (size, mtime); confirm byte equality of the rest
    for n in cmp.same_files:
        if not filecmp.cmp(Path(cmp.left) / n, Path(cmp.right) / n, shallow=False):
            out.append(f"{where}/{n}: differs")
    return out


CHECKED = "nbval-check-output"


def record_checked_outputs(chapter_id: str, timeout: int = 600) -> Path:
    """Run a solution notebook and keep the outputs of cells tagged nbval-check-output only.

    Those outputs are what nbval compares in CI; every other cell is stored without outputs.
    """
    import os

    from nbclient import NotebookClient

    use_environment_path()
    path = ROOT / SOURCE / chapter_id / f"{chapter_id}.ipynb"
    nb = nbformat.read(path, as_version=4)
    ran = nbformat.read(path, as_version=4)
    os.environ.update(GRADER_FAST="1", GRADER_STRICT="1", MPLBACKEND="Agg")
    NotebookClient(ran, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell, done in zip(nb.cells, ran.cells):
        if cell.cell_type != "code":
            continue
        keep = CHECKED in cell.metadata.get("tags", [])
        cell.outputs = [o for o in done.outputs if o.output_type == "stream"] if keep else []
        cell.execution_count = 1 if keep else None  # nbval compares only cells that "ran"
    nbformat.write(nb, path)
    return path


# --- authoring: cells with the course's nbgrader metadata ---------------------------------

def _meta(grade_id: str, *, grade=False, solution=False, locked=False, points=None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def markdown(text: str, grade_id: str | None = None):
    cell = nbformat.v4.new_markdown_cell(text.strip("\n"))
    if grade_id:
        cell.metadata.update(_meta(grade_id, locked=True))
    return cell


def code(source: str, grade_id: str | None = None, tags: tuple[str, ...] = ()):
    """A read-only code cell when given a grade_id (setup cells), else a plain one."""
    cell = nbformat.v4.new_code_cell(source.strip("\n"))
    if grade_id:
        cell.metadata.update(_meta(grade_id, locked=True))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def solution(name: str, source: str):
    """The cell a student writes: `### BEGIN SOLUTION` ... `### END SOLUTION` inside."""
    cell = nbformat.v4.new_code_cell(source.strip("\n"))
    cell.metadata.update(_meta(f"answer_{name}", solution=True))
    return cell


def test(chapter_id: str, name: str, points: float, says: str):
    """The locked test cell of exercise `name`: visible check, hidden check in grading."""
    src = (f"# {says}\n"
           "### BEGIN HIDDEN TESTS\n"
           "from grader.grade import hidden_check\n"
           f"hidden_check({chapter_id!r}, {name!r}, {name})\n"
           "### END HIDDEN TESTS\n"
           f"check({name!r}, {name})")
    cell = nbformat.v4.new_code_cell(src)
    cell.metadata.update(_meta(f"test_{name}", grade=True, locked=True, points=points))
    return cell


LANGUAGE_INFO = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                 "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                 "pygments_lexer": "ipython3", "version": "3.11.7"}


def notebook(chapter_id: str, cells: list):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                       "name": "python3"},
        # what ipykernel reports: JupyterLab marks a notebook unsaved when they differ
        "language_info": dict(LANGUAGE_INFO),
        "grader": {"chapter": chapter_id},
    }
    return nb


def write_source(chapter_id: str, cells: list) -> Path:
    """Write solutions/<chapter>/<chapter>.ipynb (used by authoring scripts)."""
    path = ROOT / SOURCE / chapter_id / f"{chapter_id}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = notebook(chapter_id, cells)
    for i, cell in enumerate(nb.cells):
        cell.id = f"{chapter_id[:2]}-{i:03d}"
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path
