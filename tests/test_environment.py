"""pyproject.toml and environment.yaml list the same dependencies."""
import re
import tomllib

import pytest
import yaml

from conftest import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def test_pyproject_and_environment_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = {_name(d) for d in project["dependencies"]}
    pip_deps |= {_name(d) for d in project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yaml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)} - {"python", "pip"}
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda |= {_name(d) for d in pip_section if not d.startswith("-")}
    assert pip_deps == conda


def test_torch_pinned_to_cpu_build_in_both():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    assert "torch==2.13.0" in (ROOT / "environment.yaml").read_text()
    assert "python=3.11" in (ROOT / "environment.yaml").read_text()


def test_torch_threads_sets_and_restores(monkeypatch):
    import torch
    from utils.train import available_cores, torch_threads
    monkeypatch.setenv("SPARSE_NUM_THREADS", "1")
    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2 and available_cores() == 2
    assert torch.get_num_threads() == before and available_cores() == 1
    with pytest.raises(ValueError):
        with torch_threads(0):
            pass


def test_default_jobs_one_run_per_core(monkeypatch):
    import torch
    from utils.experiment import default_jobs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("SPARSE_NUM_THREADS", "4")
    assert default_jobs() == 4 and default_jobs(threads=2) == 2 and default_jobs(threads=8) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_jobs() == 1
