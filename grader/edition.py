"""The student edition: what a course hands to its students (`python -m grader edition DIR`).

It holds the released notebooks, the student's part of the `grader` package (visible checks,
feedback, plots, data loaders, the observer) and, per chapter, the reference values the
visible checks ask for (`t.ref`, `t.likely`), recorded here by running each visible check
against the instructor's reference answer. It holds no reference implementation, no hidden
check, no solution and no code of the likely mistakes: only their outputs on the visible
inputs.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from grader import wire
from grader.registry import chapter_ids, get_chapter
from grader.remote import local_remote
from grader.runner import RecordingRefs, run_check

REPO = Path(__file__).resolve().parents[1]
RECORDED = "recorded"

STUDENT_README = """# {title}

Notebooks that teach the foundations of deep learning (linear and softmax regression,
multilayer perceptrons, regularisation, initialisation, backpropagation by hand, a Kaggle
capstone, the PyTorch training pipeline), each with exercises that check your code as you go.

## Set up (once)

Python 3.11 is needed. In this folder:

    make env     # creates .venv with the course's packages (about 5 GB, a few minutes)
    make lab     # opens JupyterLab on the chapters; Ctrl-C stops it

Without `make`: `python3.11 -m venv .venv`, then
`.venv/bin/pip install -r requirements.txt -c constraints.txt`,
`.venv/bin/pip install --no-deps -r requirements-nodeps.txt`, `.venv/bin/pip install -e .`,
and `.venv/bin/jupyter lab --notebook-dir=chapters`.

## Working through a chapter

Open `chapters/<chapter>/<chapter>.ipynb`. Each exercise has a cell to fill in (replace
`raise NotImplementedError()`) followed by a check cell. Run the check: it either says that
the visible checks passed or explains what is wrong (the input, what was expected, what your
code returned, and the likely cause). When your notebook is graded, further checks run on
inputs you have not seen, so make your code follow the exercise's text, not just the example.

Chapters: {chapters}.

Training cells run for less time when the environment variable `GRADER_FAST=1` is set.
Data sets are downloaded once into `~/.cache/dl-foundations` (set `GRADER_DATA_DIR` to change
it); without a network the image chapters fall back to a small data set shipped with
scikit-learn, and say so.

## Handing in

Save the notebook and hand in the `.ipynb` file as your course tells you (for example through
nbgrader's Assignment List, or by uploading it).
"""

STUDENT_MAKEFILE = """# Set-up and lab for students. See README.md.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
PIP_ENV  ?= PIP_CONFIG_FILE=/dev/null
PIP_ARGS ?= --isolated
PIP      := $(PIP_ENV) $(PY) -m pip install $(PIP_ARGS) --disable-pip-version-check
# nbgrader's instructor tools have no place in a student's lab
INSTRUCTOR_EXTENSIONS := @jupyter/nbgrader:formgrader @jupyter/nbgrader:create-assignment \\
\t@jupyter/nbgrader:course-list @jupyter/nbgrader:assignment-list @jupyter/nbgrader:menu

.PHONY: env lab

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml
\t@test -x $(PY) || $(PYTHON) -m venv $(VENV)
\t$(PIP) --quiet -r requirements.txt -c constraints.txt
\t$(PIP) --quiet --no-deps -r requirements-nodeps.txt
\t$(PIP) --quiet --no-deps --no-build-isolation -e .
\tfor p in $(INSTRUCTOR_EXTENSIONS); do \\
\t\t$(VENV)/bin/jupyter labextension disable --level=sys_prefix $$p >/dev/null 2>&1 || true; done
\t@touch $@

lab: env
\t$(VENV)/bin/jupyter lab --notebook-dir=chapters --ServerApp.answer_yes=True \\
\t\t$(if $(filter 0,$(shell id -u)),--allow-root)
"""

STUDENT_PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "dl-foundations-student"
version = "0.1.0"
description = "Checks and helpers for the deep-learning foundations notebooks (student edition)"
requires-python = ">=3.11,<3.12"

[tool.setuptools.packages.find]
include = ["grader*"]

[tool.setuptools.package-data]
grader = ["recorded/*.wire"]
"""


def reference_answer(chapter, name: str):
    module = chapter.references
    answers = getattr(module, "ANSWERS", {})
    return answers[name] if name in answers else getattr(module, name)


def record_chapter(chapter_id: str) -> dict:
    """{key: value} of every reference value the chapter's visible checks ask for."""
    chapter = get_chapter(chapter_id)
    table: dict = {}
    refs = RecordingRefs(chapter.references, table)
    for name, exercise in chapter.exercises.items():
        if exercise.visible is None:
            continue
        remote = local_remote({"answer": reference_answer(chapter, name)})
        verdict = run_check(exercise, remote.global_("answer"), hidden=False, remote_=remote,
                            refs=refs)
        if not verdict.passed:
            raise RuntimeError(f"{chapter_id}: the reference {name} fails its visible check:\n"
                               f"{verdict.feedback}")
    return {k: wire.loads(v) for k, v in table.items()}


def write_recorded(dest: Path, chapters: list[str]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for cid in chapters:
        (dest / f"{cid}.wire").write_bytes(wire.dumps(record_chapter(cid)))
    return dest


STUDENT_FILES = ("requirements.txt", "requirements-nodeps.txt", "constraints.txt",
                 "environment.yml", "postBuild")


def build(dest: Path, *, chapters: list[str] | None = None, force: bool = False,
          archive: bool = False) -> Path:
    """Write the student edition to `dest` (refusing to overwrite a non-empty folder)."""
    from grader.judge import copy_public_package

    chapters = chapters or chapter_ids()
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        if not force:
            raise SystemExit(f"{dest} exists and is not empty; choose a new folder, or pass "
                             "--force to replace it (the old one is kept as a backup)")
        backup = dest.with_name(dest.name + ".backup")
        n = 1
        while backup.exists():
            n += 1
            backup = dest.with_name(f"{dest.name}.backup{n}")
        dest.rename(backup)
        print(f"kept the previous edition as {backup}")
    with tempfile.TemporaryDirectory(prefix="edition-") as tmp:
        staging = Path(tmp) / "edition"
        staging.mkdir()
        recorded = write_recorded(Path(tmp) / "recorded", chapters)
        copy_public_package(staging, recorded)
        for cid in chapters:
            src = REPO / "chapters" / cid
            if not src.is_dir():
                raise SystemExit(f"chapters/{cid} is missing: run `make release` first")
            shutil.copytree(src, staging / "chapters" / cid,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        for name in STUDENT_FILES:
            if (REPO / name).exists():
                shutil.copy2(REPO / name, staging / name)
        titles = ", ".join(f"{cid} ({get_chapter(cid).title})" for cid in chapters)
        (staging / "README.md").write_text(STUDENT_README.format(
            title="Deep learning foundations: student edition", chapters=titles))
        (staging / "Makefile").write_text(STUDENT_MAKEFILE)
        (staging / "pyproject.toml").write_text(STUDENT_PYPROJECT)
        (staging / ".gitignore").write_text(".venv/\n__pycache__/\n.ipynb_checkpoints/\n")
        shutil.copytree(staging, dest, dirs_exist_ok=True)
    if archive:
        zip_path = dest.with_suffix(".zip")
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(dest.rglob("*")):
                if f.is_file():
                    z.write(f, Path(dest.name) / f.relative_to(dest))
        print(f"wrote {zip_path}")
    return dest
