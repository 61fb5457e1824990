"""nbgrader configuration of the course: this repository is a course directory.

solutions/<chapter>/ is nbgrader's source, nbgrader_release/<chapter>/ its release (what the
exchange hands out; the same notebooks as chapters/, which `make release` writes for the git and
student-edition routes). Instructors run nbgrader from the repository root, or from a course
directory made by `python -m grader.instructor course DIR` (see README.md, "Grading with
nbgrader"). grader.instructor.configure adds: the exchange inside the course
(<course>/nbgrader_exchange), autograde's tampering check without false alarms, feedback and
formgrader pages that load MathJax from the course environment, and quiet logs.
"""

from grader.instructor import configure

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.course_id = "dl-foundations"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "nbgrader_release"
configure(c, __file__)  # noqa: F821 - __file__ is set by traitlets when it loads this file

# Autograde runs each submission in a sandboxed kernel and judges its exercises in nbgrader's own
# process (grader.nbgrader_plugin.JudgeExecute replaces nbgrader's Execute): the kernel never sees
# a reference, and nothing the notebook prints can set its grade. Without bubblewrap, set
# c.JudgeExecute.sandbox = False knowingly (the references then rely on the source checks only).
c.Autograde.autograde_preprocessors = [
    "grader.nbgrader_plugin.JudgeExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
c.JudgeExecute.timeout = 900  # seconds for one notebook
c.JudgeExecute.cell_timeout = 300  # training cells need more than 30 s on a small machine

c.ClearSolutions.code_stub = {
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
}
