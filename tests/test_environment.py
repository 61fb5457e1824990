"""The pip set-up and environment.yml describe the same environment."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==([\w.+]+)", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_matches_requirements():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pins(pip_section) == req
    assert len(pip_section) == len(req), "environment.yml lists something requirements.txt does not"


def test_requirements_are_pinned_and_in_the_lock():
    lock = pins((ROOT / "constraints.txt").read_text().splitlines())
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert "==" in line, f"unpinned requirement {line!r}"
    for name, version in pins((ROOT / "requirements.txt").read_text().splitlines()).items():
        assert lock.get(name) == version, f"{name}=={version} differs from constraints.txt"


def test_torch_and_torchvision_import_together():
    import torch
    import torchvision

    assert torch.__version__.startswith("2.13.0")
    assert torchvision.__version__.startswith("0.28.0")
    from d2l import torch as d2l  # imports torchvision

    assert hasattr(d2l, "Animator")
