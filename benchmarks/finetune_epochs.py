"""Is 5 epochs enough? Re-run a reproduce grid's E1 fine-tunings ([CLS], one lr) with more epochs.

    python benchmarks/finetune_epochs.py REPRODUCE_DIR OUT --epochs 15 [--lr 1e-3] [--tasks agnews dbpedia]

Takes every E1 fine-tuning of REPRODUCE_DIR (pre-trained from the main corpus and scratch, [CLS] head, the
given lr), re-runs its exact settings with `--epochs N` under OUT (resumable: finished runs are reused),
and prints, per task and arm, the test accuracy (epoch chosen on validation) of the grid's run and of the
longer one, the chosen epochs, and the pre-trained − scratch gap of each. If the gap shrinks with more
epochs, the shorter schedule favoured one arm.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml


def e1_jobs(grid: Path, lr: float, tasks: list[str]) -> list[dict]:
    plan = json.loads((grid / "plan.json").read_text())
    return [
        j
        for j in plan["jobs"]
        if j["kind"] == "finetune"
        and j["role"].get("init") in ("scratch", "pretrained")
        and j["role"].get("size", 0) in (0, plan["preset"]["main_corpus"])
        and not j["role"].get("e0")
        and j["settings"].get("pooling") == "cls"
        and j["settings"].get("lr") == lr
        and j["role"]["task"] in tasks
    ]


def rerun(grid: Path, job: dict, out: Path, epochs: int) -> dict:
    """The job's fine-tuning with `epochs` epochs, in OUT/ID-eN (its results.json)."""
    name = f"{job['id']}-e{epochs}"
    if not (out / name / "results.json").is_file():
        cfg = yaml.safe_load((grid / "runs" / job["id"] / "config.yaml").read_text())
        cfg.update(epochs=epochs, out=str(out), name=name, threads=1, progress=False)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "tinylm", "finetune", "--config", str(out / f"{name}.yaml")]
        subprocess.run(cmd, check=True)
    return json.loads((out / name / "results.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tasks", nargs="+", default=["agnews", "dbpedia"])
    a = ap.parse_args()
    jobs = e1_jobs(a.grid, a.lr, a.tasks)
    if not jobs:
        sys.exit(f"{a.grid}: no E1 [CLS] fine-tunings at lr {a.lr} in plan.json")
    rows: dict[tuple[str, str], list[tuple[float, int, float, int]]] = {}
    for j in jobs:
        short = json.loads((a.grid / "runs" / j["id"] / "results.json").read_text())["test"]
        long = rerun(a.grid, j, a.out, a.epochs)["test"]
        key = (j["role"]["task"], j["role"]["init"])
        rows.setdefault(key, []).append((short["accuracy"], short["epoch"], long["accuracy"], long["epoch"]))
    print(
        f"| task | arm | runs | test acc % ({jobs[0]['settings']['epochs']} ep) | chosen epochs | "
        f"test acc % ({a.epochs} ep) | chosen epochs |"
    )
    print("|---|---|---|---|---|---|---|")
    mean = {}
    for (task, arm), r in sorted(rows.items()):
        mean[task, arm] = [100 * statistics.mean(x[i] for x in r) for i in (0, 2)]
        print(
            f"| {task} | {arm} | {len(r)} | {mean[task, arm][0]:.1f} | {[x[1] for x in r]} | "
            f"{mean[task, arm][1]:.1f} | {[x[3] for x in r]} |"
        )
    for task in sorted({t for t, _ in rows}):
        if (task, "pretrained") in mean and (task, "scratch") in mean:
            gaps = [mean[task, "pretrained"][i] - mean[task, "scratch"][i] for i in (0, 1)]
            print(f"{task}: gap pre-trained - scratch {gaps[0]:+.1f} pp -> {gaps[1]:+.1f} pp ({a.epochs} ep)")


if __name__ == "__main__":
    main()
