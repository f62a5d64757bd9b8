"""The grid on Ray (a local Ray of 2 CPUs): the same results.json as the local executor, and a grid
interrupted under Ray finishes locally to the same file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tinylm.paper.context import Context
from tinylm.paper.executor import run_ray
from tinylm.paper.grid import build_grid
from tinylm.paper.presets import load_preset
from tinylm.paper.reproduce import reproduce

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def preset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The smoke preset cut to one task, one head, no E0: the executors are under test, not the science."""
    raw = yaml.safe_load(Path(load_preset("smoke").path).read_text())
    raw |= {"tasks": ["agnews"], "poolings": ["cls"], "e0": None, "controlled": None, "corpus_sizes": [400]}
    raw |= {"e5": None, "e6": None, "distill": None}
    path = tmp_path_factory.mktemp("preset") / "ray-smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_ray_executor_gives_the_local_results(preset: str, real_data_dir: Path, tmp_path: Path) -> None:
    args = dict(seeds=1, tasks=None, n_jobs=2, data_dir=str(real_data_dir))
    local = reproduce(preset, str(tmp_path / "local"), **args, **QUIET)
    on_ray = reproduce(preset, str(tmp_path / "ray"), **args, executor="ray", **QUIET)
    a = json.loads((local / "results.json").read_text())
    assert a == json.loads((on_ray / "results.json").read_text())
    # interrupted under Ray (only the pre-training jobs ran), finished by the local executor
    p = load_preset(preset)
    jobs = build_grid(p, p.tasks, 1)
    out = tmp_path / "mixed"
    ctx = Context(out, str(real_data_dir), progress=False)
    run_ray([j for j in jobs if j.kind == "pretrain"], ctx, num_cpus=2, log=lambda *_: None)
    assert all(ctx.result_path(j.id).is_file() for j in jobs if j.kind == "pretrain")
    mixed = reproduce(preset, str(out), **args, **QUIET)
    assert json.loads((mixed / "results.json").read_text()) == a
