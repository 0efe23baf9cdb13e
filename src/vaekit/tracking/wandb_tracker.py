"""Weights & Biases (`vaekit train --track wandb`, extra `wandb`).

Offline by default (the run is written under ./wandb, or $WANDB_DIR; `wandb sync` uploads it later):
vaekit sends nothing over the network unless the user set WANDB_MODE (online, disabled, …). The project
is $WANDB_PROJECT, else the run's, else "vaekit". The console is not captured: vaekit's output stays its own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import VaekitError

RUN_DIR_KEY = "vaekit.run_dir"


def make_backend() -> WandbBackend:
    try:
        import wandb
    except ImportError:
        raise VaekitError("tracking in W&B needs the wandb package: pip install 'vaekit[wandb]', "
                          "or pass --track none") from None
    return WandbBackend(wandb)


class WandbBackend:
    title = "W&B"

    def __init__(self, wandb: Any):
        self.wandb, self.run = wandb, None

    def start(self, run_dir: Path, saved: dict[str, str] | None, training: bool) -> dict[str, str]:
        project = os.environ.get("WANDB_PROJECT") or (saved or {}).get("project") or "vaekit"
        mode = {} if os.environ.get("WANDB_MODE") else {"mode": "offline"}
        made_for = str(run_dir) if saved is None else saved.get("run_dir")
        if made_for is None or Path(made_for).resolve() != Path(run_dir).resolve():  # a copied run or a crafted file
            raise VaekitError(f"tracking.json names W&B run {saved['run_id']}, made for {str(made_for)[:200]}, not for "
                              f"{run_dir}; nothing is logged to it (remove {run_dir}/tracking.json to track this run "
                              "as a new one)")
        resume = {"id": saved["run_id"], "resume": "allow"} if saved is not None else {}
        self.run = self.wandb.init(project=project, name=run_dir.name, **mode, **resume,
                                   settings=self.wandb.Settings(console="off", silent=True))
        if training:
            self.run.config.update({RUN_DIR_KEY: str(run_dir)}, allow_val_change=True)
        # no reader of an offline W&B run exists to ask it which folder it was made for: tracking.json says so
        return {"tracker": "wandb", "run_id": self.run.id, "project": self.run.project or project, "run_dir": made_for}

    def log_params(self, params: dict[str, Any], resumed: bool) -> None:
        self.run.config.update(params, allow_val_change=True)  # a resume may change epochs or lr

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_result(self, metrics: dict[str, float], step: int) -> None:
        self.run.summary.update(metrics)  # W&B's steps only grow: an evaluation is the run's summary

    def log_files(self, folder: Path) -> None:
        for path in sorted(folder.iterdir()):  # files in the run's folder are uploaded with it
            shutil.copyfile(path, Path(self.run.dir) / path.name)

    def finish(self, completed: bool | None) -> None:
        self.run.finish(exit_code=0 if completed is not False else 1)
