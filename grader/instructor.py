"""The instructor's nbgrader route: what `nbgrader_config.py` applies to the course directory.

`configure(c, __file__)` (called by nbgrader_config.py) sets, for the course directory that holds
that nbgrader_config.py:

- the exchange inside the course, `<course>/nbgrader_exchange/` (never /usr/local/share or /srv);
- autograde's sanitising with `OverwriteCells` below: nbgrader's, without its false tampering
  alarm on every test cell of every submission (the released test cell's checksum can never
  match the source's while the source holds hidden tests that generate_assignment removes), but
  with a warning that names the student when a student really edited a test cell;
- feedback and formgrader pages that load MathJax from the course environment (the copy that
  the `jupyter_server_mathjax` package installs), not from a CDN, so math renders offline: the
  templates in grader/nbgrader_templates/ replace only nbconvert's `mathjax` macro;
- the formgrader without its configuration panel (it cannot show the server's configuration,
  and said so, "Formgrader config is not serializable", on every visit);
- a filter, by message, for the SQLAlchemy warnings nbgrader 0.9.6 triggers when autograde
  creates a submission (its objects are added to the session after SQLAlchemy's autoflush has
  looked at them: harmless, and not a problem of the course).

`python -m grader.instructor course DEST [CHAPTER ...]` makes a course directory of its own for
a term (nbgrader_config.py and solutions/), to keep grading state out of the repository.

This module is read whenever nbgrader loads the course's configuration, so it imports nothing
heavy at the top (no torch, no grader.course).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXCHANGE = "nbgrader_exchange"
TEMPLATES = Path(__file__).resolve().parent / "nbgrader_templates"
# MathJax 2 (what nbgrader's formgrader scripts call) as the jupyter_server_mathjax package ships it
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"

# nbgrader 0.9.6, Gradebook.add_submission: SubmittedAssignment/SubmittedNotebook objects reach
# the session after a lazy load has autoflushed it. Only these messages are ignored.
_AUTOFLUSH = (r"Object of type <Submitted(Assignment|Notebook)> not in session, add operation "
              r"along '\w+\.submissions' will not proceed")


def configure(c, config_file: str) -> None:
    """Apply the course's instructor-side settings to nbgrader's config object `c`."""
    course = Path(config_file).resolve().parent
    c.Exchange.root = str(course / EXCHANGE)
    c.Autograde.sanitize_preprocessors = [
        "nbgrader.preprocessors.ClearOutput",
        "nbgrader.preprocessors.DeduplicateIds",
        "nbgrader.preprocessors.OverwriteKernelspec",
        "grader.instructor.OverwriteCells",
        "nbgrader.preprocessors.CheckCellMetadata",
    ]
    # Our templates first: they override only the `mathjax` macro of nbgrader's feedback and
    # formgrade templates (both call `mathjax()` without a URL, so nbconvert's CDN default).
    c.HTMLExporter.extra_template_basedirs = [str(TEMPLATES), nbgrader_template_dir()]
    c.HTMLExporter.filters = {"course_mathjax_file_url": "grader.instructor.mathjax_file_url"}
    # The formgrader's Manage Assignments page would show its whole configuration, which holds the
    # server's own (not JSON: "Formgrader config is not serializable" on every visit).
    c.FormgradeExtension.debug = False
    quiet_autoflush_warnings()


def quiet_autoflush_warnings() -> None:
    try:
        from sqlalchemy.exc import SAWarning
    except ImportError:  # pragma: no cover - nbgrader always brings SQLAlchemy
        return
    warnings.filterwarnings("ignore", message=_AUTOFLUSH, category=SAWarning)


def nbgrader_template_dir() -> str:
    """nbgrader's own feedback/formgrade templates (where nbgrader itself looks for them)."""
    import importlib.util

    spec = importlib.util.find_spec("nbgrader")
    root = Path(spec.origin).parent if spec and spec.origin else Path()
    return str(root / "server_extensions" / "formgrader" / "templates")


def mathjax_dir() -> Path | None:
    """The MathJax 2 files of the course environment (jupyter_server_mathjax), if installed."""
    import importlib.util

    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if not spec or not spec.origin:
        return None
    static = Path(spec.origin).parent / "static"
    return static if (static / "MathJax.js").is_file() else None


def mathjax_file_url(_value=None) -> str:
    """Jinja filter: file:// URL of the local MathJax.js with the course's configuration, or ''."""
    where = mathjax_dir()
    return f"{(where / 'MathJax.js').as_uri()}?config={MATHJAX_CONFIG}" if where else ""


# --- autograde: test cells restored without a false alarm ------------------------------------

def _overwrite_cells_class():
    from nbgrader import utils
    from nbgrader.api import MissingEntry
    from nbgrader.preprocessors import ClearHiddenTests
    from nbgrader.preprocessors import OverwriteCells as NbgraderOverwriteCells

    class OverwriteCells(NbgraderOverwriteCells):
        """nbgrader's OverwriteCells, warning only about a real change of a locked cell.

        nbgrader stores a test cell's checksum before generate_assignment strips its hidden
        tests, so the released cell never matches it: nbgrader warns "Attribute 'checksum' ...
        has changed!" for every test cell of every submission. Here a cell whose source is
        exactly the released one (the source cell less its hidden tests, as ClearHiddenTests
        makes it) is restored silently (debug log); any other change still warns, naming the
        student. Restoring is nbgrader's in every case.
        """

        _current = None

        def preprocess_cell(self, cell, resources, cell_index):
            self._current = (cell, resources)
            try:
                return super().preprocess_cell(cell, resources, cell_index)
            finally:
                self._current = None

        def report_change(self, name, attr, old, new):
            cell, resources = self._current or (None, {})
            where = resources.get("nbgrader", {}) if isinstance(resources, dict) else {}
            student = where.get("student", "?")
            notebook = where.get("notebook", getattr(self, "notebook_id", "?"))
            if attr == "checksum" and cell is not None and new == self._released_checksum(name, cell):
                self.log.debug("%s/%s: test cell %s is the released one; its hidden tests are "
                               "restored from the source", student, notebook, name)
                return
            self.log.warning(
                "Attribute '%s' for cell %s has changed! (should be: %s, got: %s) in %s's %s: "
                "the submission changed a locked cell; it is graded as the source has it",
                attr, name, old, new, student, notebook)

        def _released_checksum(self, name, cell):
            try:
                source_cell = self.gradebook.find_source_cell(name, self.notebook_id,
                                                              self.assignment_id)
            except MissingEntry:
                return None
            released = copy.deepcopy(cell)
            released.source = source_cell.source
            ClearHiddenTests(config=self.config)._remove_hidden_test_region(released)
            return utils.compute_checksum(released)

    OverwriteCells.__module__ = __name__
    return OverwriteCells


def __getattr__(name):
    # nbgrader imports "grader.instructor.OverwriteCells" by name; built on first use so that
    # loading nbgrader_config.py (and `python -m grader.instructor`) stays light
    if name == "OverwriteCells":
        cls = globals()["OverwriteCells"] = _overwrite_cells_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- a course directory of its own --------------------------------------------------------------

def make_course(dest: Path, chapters: list[str] | None = None) -> Path:
    """A course directory at `dest`: the course's nbgrader_config.py and solutions/ (the source).

    nbgrader's state (gradebook.db, nbgrader_release/, nbgrader_exchange/, submitted/,
    autograded/, feedback/) is then created there, not in the repository.
    """
    import shutil

    dest = Path(dest).resolve()
    available = sorted(p.name for p in (REPO / "solutions").iterdir()
                       if p.is_dir() and not p.name.startswith("."))
    chapters = chapters or available
    unknown = [cid for cid in chapters if cid not in available]
    if unknown:
        raise SystemExit(f"no chapter {', '.join(unknown)} in {REPO / 'solutions'} "
                         f"(chapters: {', '.join(available)})")
    if (dest / "nbgrader_config.py").exists():
        raise SystemExit(f"{dest} already has a nbgrader_config.py: not overwritten")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "nbgrader_config.py", dest / "nbgrader_config.py")
    for cid in chapters:
        shutil.copytree(REPO / "solutions" / cid, dest / "solutions" / cid,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return dest


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m grader.instructor",
                                     description="Instructor tools for the nbgrader route.")
    sub = parser.add_subparsers(dest="command", required=True)
    course = sub.add_parser("course", help="make a course directory (nbgrader_config.py and "
                            "solutions/) for a term, outside the repository")
    course.add_argument("dest", type=Path)
    course.add_argument("chapters", nargs="*", help="chapter ids (default: all)")
    args = parser.parse_args(argv)
    if args.command == "course":
        dest = make_course(args.dest, args.chapters or None)
        print(f"course directory: {dest}\n  cd {dest} and follow README.md, "
              "'Grading with nbgrader'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
