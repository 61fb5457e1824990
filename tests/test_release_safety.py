"""`make release` never loses a student's work: an edited notebook in chapters/ is refused,
or with --force kept as a backup; notebooks it does not generate are never deleted."""

import shutil

import pytest

from grader import assign

CID = "01_linear_regression"


@pytest.fixture
def course(tmp_path, monkeypatch):
    for part in ("solutions", "chapters"):
        shutil.copytree(assign.ROOT / part / CID, tmp_path / part / CID)
    shutil.copy2(assign.ROOT / "nbgrader_config.py", tmp_path / "nbgrader_config.py")
    committed = (tmp_path / "chapters" / CID / f"{CID}.ipynb").read_bytes()
    monkeypatch.setattr(assign, "ROOT", tmp_path)
    monkeypatch.setattr(assign, "_committed", lambda path: committed)
    return tmp_path


@pytest.mark.slow
def test_release_refuses_then_keeps_a_backup(course):
    nb = course / "chapters" / CID / f"{CID}.ipynb"
    extra = course / "chapters" / CID / "my-experiments.ipynb"
    extra.write_text("{}")
    # the source changed (so the release must change) and a student edited the release
    src = course / "solutions" / CID / f"{CID}.ipynb"
    src.write_text(src.read_text().replace("Linear regression", "Linear Regression", 1))
    mine = nb.read_text().replace("raise NotImplementedError()", "return 42", 1)
    nb.write_text(mine)
    with pytest.raises(assign.WouldOverwrite, match="changed since they were generated"):
        assign.release([CID])
    assert nb.read_text() == mine and extra.exists()
    written = assign.release([CID], force=True)
    assert nb in written and extra.exists()
    backups = list(nb.parent.glob(f"{CID}.backup-*.ipynb"))
    assert len(backups) == 1 and backups[0].read_text() == mine
    assert "return 42" not in nb.read_text()
