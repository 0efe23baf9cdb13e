"""MLflow (`vaekit train --track mlflow`, extra `mlflow`).

The store is MLflow's choice: MLFLOW_TRACKING_URI (a server, a database, a folder), else MLflow's default
local store (MLflow 3: sqlite:///mlflow.db beside where vaekit runs, with artifacts in ./mlruns). Runs go
to the experiment MLFLOW_EXPERIMENT_ID or MLFLOW_EXPERIMENT_NAME names, else "vaekit". We use
`MlflowClient` rather than `mlflow.start_run`: no process-wide active run to leak from one call to the next.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import VaekitError

RUN_DIR_TAG = "vaekit.run_dir"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value (since 2.x); config.json is logged whole
BATCH = 100  # MLflow's limit on parameters and tags in one log_batch


# MLflow's settings vaekit changes unless the user set them: a server out of reach is one warning after seconds, not
# four minutes of retries while training and Ctrl-C wait; MLflow's INFO lines ("Creating initial MLflow database
# tables...") stay off stderr, where vaekit's own lines are
DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_LOGGING_LEVEL": "WARNING"}


def make_backend() -> MLflowBackend:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from mlflow import MlflowClient  # noqa: F401
    except ImportError:
        raise VaekitError("tracking in MLflow needs the mlflow package: pip install 'vaekit[mlflow]', "
                          "or pass --track none") from None
    with contextlib.suppress(ValueError):  # MLflow reads its level once, when first imported (maybe before us)
        logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    return MLflowBackend()


def public(uri: str) -> str:
    """A store's address without a user name or password (tracking.json may travel with the run)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def existing_store(default: str, saved: str | None) -> bool:
    """MLflow's default store here is the one the run was tracked in, and it exists (opening it makes none)."""
    if default != saved:
        return False
    parts = urlsplit(default)
    return parts.scheme not in ("sqlite", "file", "") or Path(parts.path).exists()


def param_value(value: Any) -> str:
    """A config value as MLflow keeps it: a string as it is, anything else as JSON (as in config.json)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:MAX_PARAM_LENGTH]


class MLflowBackend:
    title = "MLflow"

    def __init__(self):
        self.client: Any = None
        self.run_id = ""

    def start(self, run_dir: Path, saved: dict[str, str] | None, training: bool) -> dict[str, str]:
        from mlflow import MlflowClient, get_tracking_uri

        if saved is not None and not os.environ.get("MLFLOW_TRACKING_URI") and not existing_store(
                public(get_tracking_uri()), saved.get("store")):
            # continuing a tracked run elsewhere: MLflow's default would make a new, empty store in this folder
            # (./mlflow.db); the store tracking.json names is not followed (the file may come from someone else)
            raise VaekitError(f"run {saved['run_id']} was tracked in {saved.get('store', '?')[:200]!r} (tracking.json), "
                              "and MLFLOW_TRACKING_URI is not set: set it to that store to continue the run there")
        self.client = MlflowClient()
        store = public(self.client.tracking_uri)
        if saved is None:
            run = self.client.create_run(self._experiment(), run_name=run_dir.name, tags={RUN_DIR_TAG: str(run_dir)})
            self.run_id = run.info.run_id
        else:
            self.run_id = saved["run_id"]
            self._check_exists(store, saved)
            made_for = self.client.get_run(self.run_id).data.tags.get(RUN_DIR_TAG)
            if made_for is None or Path(made_for).resolve() != Path(run_dir).resolve():  # a copied run (cp -r) or a crafted tracking.json: never another's record
                raise VaekitError(f"tracking.json names MLflow run {self.run_id}, made for {str(made_for)[:200]}, not "
                                  f"for {run_dir}; nothing is logged to it (remove {run_dir}/tracking.json to track "
                                  "this run as a new one)")
            if training:
                self.client.update_run(self.run_id, status="RUNNING")
        return {"tracker": "mlflow", "run_id": self.run_id, "store": store}

    def _check_exists(self, store: str, saved: dict[str, str]) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(self.run_id)
        except MlflowException as e:
            if getattr(e, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise VaekitError(f"run {self.run_id} is not in the MLflow store {store} (tracking.json says it was made "
                              f"in {saved.get('store', '?')[:200]!r}: point MLFLOW_TRACKING_URI there)") from None

    def _experiment(self) -> str:
        if os.environ.get("MLFLOW_EXPERIMENT_ID"):
            return os.environ["MLFLOW_EXPERIMENT_ID"]
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "vaekit"
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else self.client.create_experiment(name)

    def log_params(self, params: dict[str, Any], resumed: bool) -> None:
        """Parameters are fixed once logged: on a resume, those that changed (epochs, lr) become tags
        "vaekit.resumed.KEY" with the new value; config.json, logged at the end, has them all."""
        from mlflow.entities import Param, RunTag

        values = {key: param_value(value) for key, value in params.items()}
        tags: dict[str, str] = {}
        if resumed:
            have = self.client.get_run(self.run_id).data.params
            tags = {f"vaekit.resumed.{k}": v for k, v in values.items() if k in have and have[k] != v}
            values = {k: v for k, v in values.items() if k not in have}
        items = [Param(k, v) for k, v in values.items()] + [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, len(items), BATCH):
            chunk = items[i:i + BATCH]
            self.client.log_batch(self.run_id, params=[p for p in chunk if isinstance(p, Param)],
                                  tags=[t for t in chunk if isinstance(t, RunTag)])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_result(self, metrics: dict[str, float], step: int) -> None:
        self.log_metrics(metrics, step)

    def log_files(self, folder: Path) -> None:
        self.client.log_artifacts(self.run_id, str(folder))

    def finish(self, completed: bool | None) -> None:
        if completed is not None:
            self.client.set_terminated(self.run_id, "FINISHED" if completed else "KILLED")
