"""Paper rows by one command: the recipes are the configs that made README's numbers, `vaekit reproduce` writes a
certificate whose numbers are `vaekit evaluate`'s on the same run, and the cosine schedule the recipes use."""

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vaekit.cli import build_config, main, parser
from vaekit.runs.checkpoint import load_state
from vaekit.runs.config import Config
from vaekit.runs.experiment import train_run
from vaekit.runs.recipes import RECIPES, recipe, verdict

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VAEKIT_DATA") or ROOT.parent / "shared" / "data")
IGNORED = {("data", "data_dir"), ("model", "data_shape"), ("model", "plugins"), ("model", "columns"),
           ("train", "epochs"), ("train", "lr_schedule"), ("train", "seed"),
           ("train", "init_from")}  # where the stored runs differ by design (a fine-tune names its base's folder)


def comparable(cfg: Config) -> dict:
    return {s: {k: v for k, v in values.items() if (s, k) not in IGNORED} for s, values in cfg.to_dict().items()}


@pytest.mark.parametrize("name, result", [("top-down", "deep_topdown_125ep_k1000"),
                                          ("top-down-gated", "deep_topdown_gated_280ep_k1000"),
                                          ("deep-top-down", "deep_topdown_w300_vamp_190ep_k5000"),
                                          ("deep-top-down-iwae", "deep_topdown_w300_vamp_190ep_iwae8_k5000"),
                                          ("deep-top-down-8x8-iwae", "deep_topdown_8x8_iwae8_k5000"),
                                          ("deep-top-down-8x8-spectral-iwae", "deep_topdown_8x8_spectral_iwae8_k5000"),
                                          ("ladder", "deep_ladder_50ep_k500"),
                                          ("ladder-bottom-up", "deep_ladder-bottom-up_50ep_k500")])
def test_a_recipe_is_the_config_of_the_run_behind_its_number(name, result):
    stored = json.loads((ROOT / "benchmarks" / "results" / f"{result}.json").read_text())
    r = recipe(name)
    assert comparable(Config.from_dict(r.config)) == comparable(Config.from_dict(stored["config"]))
    assert r.config["train"]["epochs"] == stored["epochs"] and r.ours_k == stored["k"]
    assert r.ours == f"{stored['nll']:.2f} ± {stored['stderr']:.2f}"


def test_every_recipe_builds_in_both_budgets_and_readme_shows_its_number():
    readme = (ROOT / "README.md").read_text()
    for r in RECIPES:
        for budget in ("quick", "paper"):
            config, (k, n) = r.budget(budget)
            Config.from_dict(config)
            assert k > 0 and (n is None or n > 0)
        assert r.ours.split(" ±")[0] in readme, r.name
    assert "vaekit reproduce --list" in readme


def test_verdict_against_the_papers_number():
    assert verdict(83.19, 83.08, 0.22) == "reproduced (-0.11 nats from the paper)"
    assert verdict(85.57, 83.61, 0.23) == "better than the paper by 1.96 nats"
    assert verdict(81.74, 83.29, 0.23) == "short of the paper by 1.55 nats"
    assert verdict(None, 83.0, 0.2) == "no published number at this protocol"


def test_list_prints_every_recipe(capsys):
    assert main(["reproduce", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1 : 1 + len(RECIPES)]] == [r.name for r in RECIPES]


def test_list_of_one_recipe_at_a_budget_prints_its_epochs_there(capsys):
    """`--list NAME` printed every recipe, and `--budget quick` the paper budget's epochs (the eighth attack)."""
    for budget in ("paper", "quick"):
        assert main(["reproduce", "--list", "deep-top-down-iwae", "--budget", budget]) == 0
        lines = capsys.readouterr().out.splitlines()
        r = recipe("deep-top-down-iwae")
        want = f"{recipe(r.after).budget(budget)[0]['train']['epochs']}+{r.budget(budget)[0]['train']['epochs']}"
        assert len(lines) == 4 and lines[1].split()[:2] == ["deep-top-down-iwae", want]
    assert want == "1+1"


def test_the_quick_digits_recipe_certifies_what_evaluate_says(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quiet", "reproduce", "digits-demo", "--budget", "quick", "--seeds", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    cert = json.loads((out / "certificate.json").read_text())
    assert main(["--quiet", "evaluate", str(out / "seed-1"), "--k", "100", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    row = cert["seeds"][1]
    assert (row["nll"], row["log_likelihood_stderr"], row["ess_min"]) == (
        evaluated["nll"], evaluated["log_likelihood_stderr"], evaluated["ess_min"])
    assert cert["protocol"]["k"] == 100 and cert["protocol"]["n"] == cert["protocol"]["split_size"] == 297
    assert cert["nll"] == pytest.approx((cert["seeds"][0]["nll"] + row["nll"]) / 2, abs=1e-12)
    assert cert["nll_sd_over_seeds"] == pytest.approx(abs(cert["seeds"][0]["nll"] - row["nll"]) / math.sqrt(2))
    assert cert["config"]["train"]["epochs"] == 20 and "no choice of this run" in cert["protocol"]["evaluated"]
    assert cert["seeds"][0]["nll"] != row["nll"]  # two seeds, two runs


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason=f"{SHARED / 'mnist'} not found (shared data)")
def test_a_quick_mnist_recipe_runs_at_its_protocol(tmp_path, capsys):
    out = tmp_path / "plain"
    assert main(["--quiet", "reproduce", "plain", "--budget", "quick", "--data-dir", str(SHARED), "--out", str(out)]) == 0
    cert = json.loads((out / "certificate.json").read_text())
    assert (cert["protocol"]["k"], cert["protocol"]["n"], cert["protocol"]["split_size"]) == (100, 500, 10000)
    assert cert["protocol"]["binarization"] == "dynamic" and 90 < cert["nll"] < 200  # one epoch of the plain VAE
    assert cert["paper_nll"] == 86.76 and "quick budget" in cert["verdict"]


def test_the_cosine_schedule_sets_each_epochs_rate_and_resumes_on_its_curve(tmp_path):
    flags = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--lr", "0.01", "--lr-schedule", "cosine"]
    assert main(["--quiet", "train", *flags, "--epochs", "3", "--out", str(tmp_path / "run")]) == 0
    lr = float(load_state(tmp_path / "run")["optimizer"]["param_groups"][0]["lr"])
    assert lr == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 2 / 3)), rel=1e-12)  # epoch e = 2 of 3
    cfg = build_config(parser().parse_args(["train", *flags, "--epochs", "4", "--out", "x"]))

    def stop_after_epoch_2(record, model, config):  # the checkpoint is written before the epoch's side channels
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "part", progress=False, on_epoch=stop_after_epoch_2)
    assert load_state(tmp_path / "part")["epoch"] == 2
    assert main(["--quiet", "train", *flags, "--epochs", "4", "--resume", "--out", str(tmp_path / "part")]) == 0
    assert main(["--quiet", "train", *flags, "--epochs", "4", "--out", str(tmp_path / "full")]) == 0
    resumed, full = (load_file(tmp_path / d / "model.safetensors") for d in ("part", "full"))
    assert all(torch.equal(resumed[key], full[key]) for key in full)  # the same curve, not one over 2 epochs


def test_a_resume_that_bends_the_cosine_curve_says_so(tmp_path, caplog):
    import logging

    flags = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "8", "--lr-schedule", "cosine"]
    assert main(["--quiet", "train", *flags, "--epochs", "2", "--out", str(tmp_path / "run")]) == 0
    with caplog.at_level(logging.WARNING):
        assert main(["--quiet", "train", "--out", str(tmp_path / "run"), "--epochs", "4", "--resume"]) == 0
    assert "schedule changes on this resume (cosine over 2 epochs → cosine over 4): epoch 3 trains at lr 0.0005" \
        in caplog.text


def test_reproduce_continues_only_a_run_of_the_same_recipe_budget_and_seed(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["--quiet", "train", "--dataset", "digits", "--latent-dim", "8", "--hidden", "256", "--hidden", "128",
                 "--epochs", "1", "--batch-size", "64", "--lr", "2e-3", "--beta", "0.1", "--out", str(out / "seed-0")]) == 0
    capsys.readouterr()
    assert main(["--quiet", "reproduce", "digits-demo", "--budget", "quick", "--out", str(out)]) == 2
    assert "[train] epochs is 1, not the recipe's 20" in capsys.readouterr().err
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "seed-0").symlink_to(tmp_path / "elsewhere")
    assert main(["--quiet", "reproduce", "digits-demo", "--budget", "quick", "--out", str(tmp_path / "linked")]) == 2
    assert "is a symbolic link" in capsys.readouterr().err and not any((tmp_path / "elsewhere").iterdir())
    cfg = json.loads((out / "seed-0" / "config.json").read_text())
    cfg["model"]["plugins"] = ["evil"]  # it said "pass --plugin evil", a flag reproduce does not have
    (out / "seed-0" / "config.json").write_text(json.dumps(cfg))
    assert main(["--quiet", "reproduce", "digits-demo", "--budget", "quick", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"vaekit: error: {out / 'seed-0'}: holds a run whose parts come from a "
                                               "plugin, not the recipe's; choose another --out (or remove it)")


def test_a_recipe_after_another_starts_from_its_run(tmp_path, capsys, monkeypatch):
    """A fine-tune recipe (`after`): the recipe it starts from is trained first, at the same budget and seed, and the
    fine-tune run starts from its weights (`train --init-from`); the certificate is evaluate's on the fine-tune."""
    from vaekit.runs import recipes
    from vaekit.runs.recipes import Recipe

    demo = recipe("digits-demo")
    tune = Recipe("digits-demo-iwae", "the demo, then IWAE", "", None, "", after="digits-demo", ours_k=100,
                  config={**demo.config, "train": {**demo.config["train"], "objective": {"name": "iwae", "k": 3}}},
                  quick={"train": {"epochs": 2, "lr": 1e-4}}, quick_evaluation=(50, None))
    monkeypatch.setattr(recipes, "RECIPES", [*RECIPES, tune])
    out = tmp_path / "tune"
    assert main(["--quiet", "reproduce", "digits-demo-iwae", "--budget", "quick", "--out", str(out)]) == 0
    base, run = out / "digits-demo-seed-0", out / "seed-0"
    assert json.loads((base / "config.json").read_text())["train"]["epochs"] == 20  # the demo's quick budget
    tuned = json.loads((run / "config.json").read_text())["train"]
    assert (tuned["init_from"], tuned["epochs"], tuned["objective"]["name"]) == (str(base.resolve()), 2, "iwae")
    capsys.readouterr()
    assert main(["--quiet", "evaluate", str(run), "--k", "50", "--json"]) == 0
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["seeds"][0]["nll"] == json.loads(capsys.readouterr().out)["nll"]
    assert cert["after"] == "digits-demo" and cert["seeds"][0]["started_from"] == str(base)
    assert main(["--quiet", "evaluate", str(base), "--k", "50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nll"] != cert["seeds"][0]["nll"]  # two epochs of IWAE moved it
    out.rename(tmp_path / "moved")  # the fine-tune names its base by the old path: it was refused, not continued
    assert main(["--quiet", "reproduce", "digits-demo-iwae", "--budget", "quick", "--out", str(tmp_path / "moved")]) == 0
    again = json.loads((tmp_path / "moved" / "certificate.json").read_text())
    assert again["seeds"][0]["nll"] == cert["seeds"][0]["nll"] and again["seeds"][0]["train_seconds_this_call"] < 5


def test_a_seed_restarted_from_step_0_never_starts_from_a_run_its_config_names(tmp_path, capsys, monkeypatch):
    """A seed folder holding only config.json (stopped before its first checkpoint) started again from the run its
    `init_from` named, any run at all, and the certificate claimed the recipe (fifth attack, HIGH): refused now."""
    from vaekit.runs import recipes
    from vaekit.runs.recipes import Recipe

    demo = recipe("digits-demo")
    tune = Recipe("digits-demo-tune", "the demo, tuned", "", None, "", after="digits-demo", ours_k=100,
                  config={**demo.config, "train": {**demo.config["train"], "lr": 1e-4}},
                  quick={"train": {"epochs": 2}}, quick_evaluation=(20, 100))
    monkeypatch.setattr(recipes, "RECIPES", [*RECIPES, tune])
    honest = tmp_path / "honest"
    assert main(["--quiet", "reproduce", "digits-demo-tune", "--budget", "quick", "--out", str(honest)]) == 0
    other = tmp_path / "other"  # another run of the same network, trained longer
    assert main(["--quiet", "train", "--dataset", "digits", "--latent-dim", "8", "--hidden", "256", "--hidden", "128",
                 "--epochs", "3", "--seed", "7", "--out", str(other)]) == 0
    crafted = tmp_path / "crafted"
    (crafted / "seed-0").mkdir(parents=True)
    shutil.copytree(honest / "digits-demo-seed-0", crafted / "digits-demo-seed-0")
    cfg = json.loads((honest / "seed-0" / "config.json").read_text())
    cfg["train"]["init_from"] = str(other)
    (crafted / "seed-0" / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["--quiet", "reproduce", "digits-demo-tune", "--budget", "quick", "--out", str(crafted)]) == 2
    said = capsys.readouterr().err.strip()
    assert said == (f"vaekit: error: {crafted / 'seed-0'}: holds a run whose [train] init_from is '{other}', not the "
                    f"recipe's '{(crafted / 'digits-demo-seed-0').resolve()}'; choose another --out (or remove it)")
    assert not (crafted / "seed-0" / "model.safetensors").exists()
    # a recipe with no base: a seed whose config names one is refused
    cfg = json.loads((honest / "digits-demo-seed-0" / "config.json").read_text())
    cfg["train"]["init_from"] = str(other)
    (tmp_path / "plain" / "seed-0").mkdir(parents=True)
    (tmp_path / "plain" / "seed-0" / "config.json").write_text(json.dumps(cfg))
    assert main(["--quiet", "reproduce", "digits-demo", "--budget", "quick", "--out", str(tmp_path / "plain")]) == 2
    said = capsys.readouterr().err.strip()
    assert said == (f"vaekit: error: {tmp_path / 'plain' / 'seed-0'}: holds a run whose [train] init_from is "
                    f"'{other}', not the recipe's None; choose another --out (or remove it)")


def test_reproduce_checks_its_device_as_train_does(tmp_path, capsys):
    """--device tpu (or cuda on a machine without one) ended in a torch traceback, exit 1."""
    bad = ["tpu"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad:
        assert main(["--quiet", "reproduce", "digits-demo", "--budget", "quick", "--device", device,
                     "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == (["vaekit: error: --device 'tpu': use cpu, cuda, cuda:N or auto"] if device == "tpu" else
                       ["vaekit: error: --device cuda: this torch build or machine has no CUDA device"])
    assert not (tmp_path / "r" / "seed-0").exists()
