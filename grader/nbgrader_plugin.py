"""nbgrader's autograde with hidden checks judged outside the student's kernel.

`nbgrader_config.py` replaces nbgrader's `Execute` preprocessor by `JudgeExecute`: the
notebook's cells run in a sandboxed kernel (`grader.judge`), test cells are never run there,
and each test cell's output is written here, by the grader, from the verdict of its hidden
check: the feedback as text and the score as the cell's result (nbgrader's partial credit).
So nothing a notebook prints, displays or patches can set its grade.

The chapter is the assignment being graded (nbgrader's assignment id), not the notebook's
metadata.
"""

from __future__ import annotations

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Float, Int

from grader.judge import Options, grade_notebook_node
from grader.registry import chapter_ids, get_chapter


class JudgeExecute(NbGraderPreprocessor):
    """Run a submission in a sandbox; write each test cell's verdict as its output."""

    sandbox = Bool(True, help="run the student's kernel under bubblewrap").tag(config=True)
    timeout = Float(900, help="seconds for the whole notebook").tag(config=True)
    cell_timeout = Float(120, help="seconds for one cell").tag(config=True)
    exercise_timeout = Float(120, help="seconds for one hidden check").tag(config=True)
    memory_gib = Float(4, help="memory limit of the kernel, GiB").tag(config=True)
    fast = Bool(True, help="shorten training cells (GRADER_FAST=1)").tag(config=True)
    seed = Int(-1, help="seed of hidden inputs (-1: drawn per notebook)").tag(config=True)

    def preprocess(self, nb, resources):
        assignment = resources.get("nbgrader", {}).get("assignment")
        if assignment not in chapter_ids():
            raise ValueError(f"assignment {assignment!r} is not a chapter of this course "
                             f"({', '.join(chapter_ids())})")
        chapter = get_chapter(assignment)
        options = Options(sandbox=self.sandbox, timeout=self.timeout,
                          cell_timeout=self.cell_timeout, exercise_timeout=self.exercise_timeout,
                          memory_bytes=int(self.memory_gib * 2**30), fast=self.fast,
                          salt=None if self.seed < 0 else self.seed)
        result = grade_notebook_node(nb, chapter.id, options)
        by_name = {e["name"]: e for e in result["exercises"]}
        for note in result.get("notes", []):
            self.log.warning("%s: %s", resources.get("unique_key", assignment), note)
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type != "code":
                continue
            cell.outputs = []
            if not (meta.get("grade") and not meta.get("solution")):
                continue
            ex = chapter.by_grade_id(meta.get("grade_id", ""))
            if ex is None or ex.name not in by_name:
                continue
            verdict = by_name.pop(ex.name)
            cell.outputs = [
                nbformat.v4.new_output("stream", name="stdout", text=verdict["feedback"] + "\n"),
                nbformat.v4.new_output("execute_result", data={
                    "text/plain": f"{min(verdict['score'], ex.points):g}"}, execution_count=1),
            ]
        return nb, resources
