"""nbgrader configuration of the course: this repository is the course directory.

solutions/<chapter>/ is nbgrader's source, chapters/<chapter>/ its release. Instructors run
nbgrader from the repository root (see README.md, "Grading with nbgrader").
"""

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.course_id = "dl-foundations"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "chapters"

# Test cells grade with the hidden checks of the `grader` package; training cells need more than
# nbgrader's default 30 s on a small machine.
c.ExecutePreprocessor.timeout = 300
c.ExecutePreprocessor.interrupt_on_timeout = True

c.ClearSolutions.code_stub = {
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
}
