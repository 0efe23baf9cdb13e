"""`vaekit train --track mlflow|wandb` and `evaluate` into the same tracked run (issue 26), read back with
the trackers' own readers: MLflow's `MlflowClient`, and W&B's offline run files (its transaction log,
read record by record, since wandb offers no reader of an offline run)."""

import json
import os
import struct
import sys

import pytest

from vaekit.cli import main

# MLflow's sqlite store on SQLAlchemy 2.1 (vaekit's own calls into a tracker silence its deprecations; the
# tests' MlflowClient does not)
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")
TRAIN = ["--quiet", "train", "--dataset", "digits", "--latent-dim", "2", "--hidden", "16"]
EVALUATE = ["--quiet", "evaluate", "--k", "10", "--elbo-samples", "5", "--json"]


def run(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def metrics_of(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def flat(d, prefix=""):
    """config.json's tables as MLflow parameters: dotted keys; a string as it is, anything else as JSON."""
    params = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            params.update(flat(value, f"{prefix}{key}."))
        else:
            params[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return params


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local MLflow store in tmp_path (its artifacts in tmp_path/mlruns, beside where vaekit runs)."""
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    from mlflow import MlflowClient

    return MlflowClient(uri)


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


def artifact(client, run_id, name, tmp_path):
    return (tmp_path / "got" / name).read_bytes() if client.download_artifacts(run_id, name, str(tmp_path / "got")) \
        else None


def test_mlflow_holds_the_config_each_epoch_the_files_a_resume_and_an_evaluation(tmp_path, store, capsys, caplog):
    out = tmp_path / "run"
    code, _, err = run(capsys, *TRAIN, "--epochs", "2", "--track", "mlflow", "--out", out)
    assert code == 0, err
    saved = json.loads((out / "tracking.json").read_text())
    run_id = saved["run_id"]
    assert saved == {"tracker": "mlflow", "run_id": run_id, "store": f"sqlite:///{tmp_path}/mlflow.db"}
    got = store.get_run(run_id)
    config = json.loads((out / "config.json").read_text())
    assert got.data.params == flat(config)  # every resolved setting, versions included
    assert got.data.params["model.latent_dim"] == "[2]" and got.data.params["train.epochs"] == "2"
    assert got.data.tags["vaekit.run_dir"] == str(out)
    assert got.info.status == "FINISHED" and got.info.run_name == "run"
    records = metrics_of(out)
    assert set(got.data.metrics) == {k for k in records[0] if "/" in k}
    for key in ("val/elbo", "train/elbo", "val/kl"):  # the very floats of metrics.jsonl, at step = epoch
        assert history(store, run_id, key) == [(r["epoch"], r[key]) for r in records]
    assert [a.path for a in store.list_artifacts(run_id)] == ["config.json"]
    assert artifact(store, run_id, "config.json", tmp_path) == (out / "config.json").read_bytes()

    # pictures made after training are logged at the end of the next; a link posing as one is not followed
    assert run(capsys, "--quiet", "sample", out, "--n", "4")[0] == 0
    (tmp_path / "secret.txt").write_text("not for the tracker\n")
    (out / "leak.png").symlink_to(tmp_path / "secret.txt")
    code, _, err = run(capsys, "--quiet", "train", "--out", out, "--epochs", "3", "--resume")  # no --track: the run's
    assert code == 0, err
    assert json.loads((out / "tracking.json").read_text()) == saved
    assert [r.info.run_id for r in store.search_runs([got.info.experiment_id])] == [run_id]  # one run, continued
    records = metrics_of(out)
    assert history(store, run_id, "val/elbo") == [(r["epoch"], r["val/elbo"]) for r in records] and len(records) == 3
    got = store.get_run(run_id)
    assert got.data.params["train.epochs"] == "2" and got.data.tags["vaekit.resumed.train.epochs"] == "3"
    assert got.info.status == "FINISHED"
    assert sorted(a.path for a in store.list_artifacts(run_id)) == ["config.json", "samples.png"]
    assert artifact(store, run_id, "samples.png", tmp_path) == (out / "samples.png").read_bytes()
    assert json.loads(artifact(store, run_id, "config.json", tmp_path))["train"]["epochs"] == 3
    assert any("leak.png: not logged to the tracker (a symbolic link)" in r.getMessage() for r in caplog.records)

    code, stdout, err = run(capsys, *EVALUATE, out)
    assert code == 0, err
    printed = json.loads(stdout)  # stdout is still one JSON object
    assert history(store, run_id, "eval/test/log_likelihood") == [(3, printed["log_likelihood"])]
    assert store.get_run(run_id).data.metrics["eval/test/elbo"] == printed["elbo"]
    assert json.loads(artifact(store, run_id, "evaluation-test.json", tmp_path)) == printed  # with its protocol
    assert printed["protocol"]["weights_sha256"]
    assert run(capsys, *EVALUATE, out, "--track", "none")[0] == 0
    assert len(history(store, run_id, "eval/test/log_likelihood")) == 1


def untimed(out):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in metrics_of(out)]


@pytest.mark.parametrize("failure", ["log call raises OSError", "server out of reach"])
def test_a_failing_tracker_is_one_warning_and_training_is_unchanged(tmp_path, store, capsys, caplog, monkeypatch,
                                                                     failure):
    from mlflow import MlflowClient

    calls = []
    if failure == "server out of reach":  # nothing listens on port 9; no retries, so the test is quick
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    else:
        def full_disk(self, *args, **kwargs):
            calls.append(args)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(MlflowClient, "log_batch", full_disk)
    assert run(capsys, *TRAIN, "--epochs", "2", "--out", tmp_path / "plain")[0] == 0
    code, _, err = run(capsys, *TRAIN, "--epochs", "2", "--track", "mlflow", "--out", tmp_path / "tracked")
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if "tracking failed" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("MLflow tracking failed while starting its run (")
    assert "tracking is off for the rest of this run" in warned[0]
    if calls:
        assert len(calls) == 1  # after the first failure nothing more is tried
    assert untimed(tmp_path / "tracked") == untimed(tmp_path / "plain") and len(untimed(tmp_path / "plain")) == 2
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "tracked" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    assert (tmp_path / "tracked" / "train_state.pt").is_file()
    # the run made before the failure is kept for a --resume; a server out of reach made none
    assert (tmp_path / "tracked" / "tracking.json").exists() == (failure != "server out of reach")


@pytest.mark.parametrize("tracker, title", [("mlflow", "MLflow"), ("wandb", "W&B")])
def test_a_missing_package_is_one_line_before_anything_trains(tmp_path, capsys, monkeypatch, tracker, title):
    monkeypatch.setitem(sys.modules, tracker, None)  # `import mlflow` raises ImportError, as when not installed
    code, _, err = run(capsys, *TRAIN, "--epochs", "1", "--track", tracker, "--out", tmp_path / "r")
    said = f"tracking in {title} needs the {tracker} package: pip install 'vaekit[{tracker}]', or pass --track none"
    assert code == 2 and err == [f"vaekit: error: {said}"]
    assert not (tmp_path / "r").exists()


def test_mlflow_default_store_works_with_the_dev_extra(tmp_path, monkeypatch, capsys):
    """No MLFLOW_TRACKING_URI: MLflow's own default (MLflow 3: ./mlflow.db, sqlite through sqlalchemy)."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert run(capsys, *TRAIN, "--epochs", "1", "--track", "mlflow", "--out", "r")[0] == 0
    saved = json.loads((tmp_path / "r" / "tracking.json").read_text())
    client = mlflow.MlflowClient(saved["store"])
    assert saved["store"] in (f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "mlruns").as_uri())
    assert history(client, saved["run_id"], "val/elbo") == [(1, metrics_of(tmp_path / "r")[0]["val/elbo"])]


def copied_and_continued(tmp_path, capsys, caplog, tracker: str, title: str, snapshot=lambda rid: None):
    """Train a tracked run `a`, copy it to `b` (`cp -r`), resume and evaluate `b`: each says once that tracking is off
    (tracking.json names a's run, made for a's folder); returns a's run id and `snapshot(rid)` taken before `b` goes
    on."""
    assert run(capsys, *TRAIN, "--epochs", "1", "--track", tracker, "--out", tmp_path / "a")[0] == 0
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    rid = json.loads((tmp_path / "a" / "tracking.json").read_text())["run_id"]
    before = snapshot(rid)
    caplog.clear()
    assert run(capsys, "--quiet", "train", "--out", tmp_path / "b", "--resume", "--epochs", "2")[0] == 0
    assert run(capsys, *EVALUATE, tmp_path / "b")[0] == 0
    want = (f"{title} tracking is off for this run: tracking.json names {title} run {rid}, made for {tmp_path / 'a'}, "
            f"not for {tmp_path / 'b'}; nothing is logged to it (remove {tmp_path / 'b'}/tracking.json to track this "
            "run as a new one)")
    assert [r.getMessage() for r in caplog.records if title in r.getMessage()] == [want, want]
    return rid, before


def test_a_copied_run_never_logs_into_the_tracked_run_of_its_original(tmp_path, store, capsys, caplog):
    """`cp -r a b` (or a tracking.json edited to name a's run) then `train --out b --resume` and `evaluate b` logged
    b's epochs, evaluation and model as a resume of a's MLflow run; now one warning, and a's run is unchanged."""
    rid, before = copied_and_continued(tmp_path, capsys, caplog, "mlflow", "MLflow", lambda r: store.get_run(r).data)
    after = store.get_run(rid).data
    assert (after.metrics, after.params, after.tags) == (before.metrics, before.params, before.tags)
    assert history(store, rid, "train/elbo") == [(1, metrics_of(tmp_path / "a")[0]["train/elbo"])]


def test_a_tracked_run_continued_from_another_folder_makes_no_store_there(tmp_path, monkeypatch, capsys, caplog):
    """No MLFLOW_TRACKING_URI: a resume beside the default store continues the run in it; evaluate of the run from
    another folder is one whole warning and leaves no ./mlflow.db there (MLflow made an empty one, the warning cut
    mid-word); the store tracking.json names is not followed."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert run(capsys, *TRAIN, "--epochs", "1", "--track", "mlflow", "--out", "r")[0] == 0
    assert run(capsys, "--quiet", "train", "--epochs", "2", "--resume", "--out", "r")[0] == 0
    saved = json.loads((tmp_path / "r" / "tracking.json").read_text())
    client = mlflow.MlflowClient(saved["store"])
    assert [step for step, _ in history(client, saved["run_id"], "val/elbo")] == [1, 2]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, _ = run(capsys, *EVALUATE, tmp_path / "r")
    assert code == 0 and json.loads(out)["nll"] > 0
    assert not (tmp_path / "elsewhere" / "mlflow.db").exists() and not (tmp_path / "elsewhere" / "mlruns").exists()
    want = (f"MLflow tracking is off for this run: run {saved['run_id']} was tracked in '{saved['store']}' "
            "(tracking.json), and MLFLOW_TRACKING_URI is not set: set it to that store to continue the run there")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("mlflow") or "MLflow" in r.getMessage()] == [want]
    assert "test/nll" not in client.get_run(saved["run_id"]).data.metrics


def test_tracking_json_is_written_by_rename_never_through_a_link(tmp_path, store, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "tracking.json").symlink_to(tmp_path / "elsewhere.json")  # dangling: nothing may be created there
    assert run(capsys, *TRAIN, "--epochs", "1", "--track", "mlflow", "--out", out)[0] == 0
    assert not (tmp_path / "elsewhere.json").exists() and not (out / "tracking.json").is_symlink()
    assert json.loads((out / "tracking.json").read_text())["tracker"] == "mlflow"


def wandb_records(path):
    """The records of an offline W&B run file: LevelDB's log format (32 KiB blocks of records with a 7-byte
    header: crc, length, kind) after a 7-byte file header, each record a protobuf `Record`."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending, pos = pending + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_items(record, kind):
    """{key: value} of a history, summary or config record."""
    items = {"history": lambda r: r.history.item, "summary": lambda r: r.summary.update,
             "config": lambda r: r.config.update}[kind](record)
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def wandb_here(tmp_path, monkeypatch):
    """W&B writes under tmp_path, offline (vaekit's default); its process-wide settings are made afresh."""
    wandb = pytest.importorskip("wandb")
    wandb.teardown()  # the settings of a first run in this process (WANDB_DIR …) would hold for the next
    monkeypatch.chdir(tmp_path)
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    for name in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)


def test_wandb_offline_run_holds_the_config_each_epoch_and_the_evaluation(tmp_path, monkeypatch, capsys):
    wandb_here(tmp_path, monkeypatch)
    out = tmp_path / "run"
    assert run(capsys, *TRAIN, "--epochs", "2", "--track", "wandb", "--out", out)[0] == 0
    first_config = (out / "config.json").read_bytes()
    assert run(capsys, "--quiet", "train", "--out", out, "--epochs", "3", "--resume")[0] == 0
    code, stdout, err = run(capsys, *EVALUATE, out)
    assert code == 0, err
    # W&B's service writes the run files on its own; under load its last records reached them after finish()
    # returned (CI once found no summary yet): its teardown waits for the service, as a process's exit does
    pytest.importorskip("wandb").teardown()
    saved = json.loads((out / "tracking.json").read_text())
    assert saved == {"tracker": "wandb", "run_id": saved["run_id"], "project": "vaekit", "run_dir": str(out)}
    runs = sorted((tmp_path / "WANDB_DIR" / "wandb").glob("offline-run-*"))
    # one id for the three (train, resume, evaluate): each folder holds that run's file
    assert len(runs) == 3 and all((r / f"run-{saved['run_id']}.wandb").is_file() for r in runs)
    records = [list(wandb_records(r / f"run-{saved['run_id']}.wandb")) for r in runs]
    steps = {r.history.step.num: wandb_items(r, "history") for rs in records for r in rs
             if r.WhichOneof("record_type") == "history"}
    for m in metrics_of(out):  # the very floats of metrics.jsonl, at step = epoch
        assert {k: steps[m["epoch"]][k] for k in m if "/" in k} == {k: v for k, v in m.items() if "/" in k}
    config = {}
    for r in records[0]:
        if r.WhichOneof("record_type") == "config":
            config.update(wandb_items(r, "config"))
    assert config["model.latent_dim"] == [2] and config["train.objective.name"] == "elbo"
    assert config["vaekit.run_dir"] == str(out)
    assert (runs[0] / "files" / "config.json").read_bytes() == first_config
    assert (runs[1] / "files" / "config.json").read_bytes() == (out / "config.json").read_bytes()
    summary = {}
    for r in records[2]:
        if r.WhichOneof("record_type") == "summary":
            summary.update(wandb_items(r, "summary"))
    printed = json.loads(stdout)
    assert summary["eval/test/log_likelihood"] == printed["log_likelihood"]
    assert json.loads((runs[2] / "files" / "evaluation-test.json").read_text()) == printed
    assert not os.environ.get("WANDB_MODE")


def test_a_copied_wandb_run_never_continues_the_offline_run_of_its_original(tmp_path, monkeypatch, capsys, caplog):
    """`cp -r a b` then `train --out b --resume` and `evaluate b` resumed a's offline W&B run (no reader of an offline
    run can say which folder it was made for; tracking.json records it): now one warning each, nothing logged."""
    wandb_here(tmp_path, monkeypatch)
    copied_and_continued(tmp_path, capsys, caplog, "wandb", "W&B")
    assert len(list((tmp_path / "WANDB_DIR" / "wandb").glob("offline-run-*"))) == 1  # a's first run only
    assert len(metrics_of(tmp_path / "b")) == 2  # the copy trained on, untracked


def test_a_damaged_tracking_json_is_a_warning_for_evaluate_and_ignored_under_track_none(tmp_path, capsys, caplog):
    out = tmp_path / "run"
    assert run(capsys, *TRAIN, "--epochs", "1", "--out", out)[0] == 0
    (out / "tracking.json").write_text("{not json")
    code, stdout, err = run(capsys, *EVALUATE, out)
    assert code == 0 and json.loads(stdout)["split"] == "test"  # the evaluation stands; only its tracking is off
    said = f"{out}/tracking.json: not valid JSON; remove it to start a new tracked run; the evaluation is not logged"
    assert [r.getMessage() for r in caplog.records if "tracking.json" in r.getMessage()] == [f"{said} to the run's tracker"]
    code, _, err = run(capsys, "--quiet", "train", "--out", out, "--epochs", "2", "--resume", "--track", "none")
    assert code == 0, err
    assert len(metrics_of(out)) == 2 and (out / "tracking.json").read_text() == "{not json"
