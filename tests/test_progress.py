"""Feedback on long work: plain periodic lines off a terminal, a bar with rate and time left on one,
nothing when asked for quiet."""

import io
import time

import torch

from vaekit import Config, train_run
from vaekit.training import progress as progress_module
from vaekit.training.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_off_a_terminal_say_count_rate_and_time_left():
    out = io.StringIO()
    bar = Progress(1000, "evaluate", unit="ex", stream=out, every_s=0.0)
    for _ in range(4):
        bar.update(250, elbo=-1.5)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # after 250, 500, 750; the caller reports the finished whole itself
    assert lines[0].startswith("evaluate: 250/1000 ex (25%, ") and " ex/s, " in lines[0] and " s left)" in lines[0]
    assert lines[0].endswith("elbo -1.500")


def test_a_terminal_gets_a_tqdm_bar_and_quiet_gets_nothing():
    tty = Terminal()
    with Progress(100, "epoch 1", stream=tty) as bar:
        time.sleep(0.15)  # tqdm redraws at most every 0.1 s
        bar.update(50, elbo=-2.0)
    assert "epoch 1" in tty.getvalue() and "ex/s" in tty.getvalue() and "elbo=-2.000" in tty.getvalue()
    for stream in (Terminal(), io.StringIO()):
        with Progress(100, "x", stream=stream, enabled=False, every_s=0.0) as bar:
            bar.update(50)
        assert stream.getvalue() == ""


def test_training_reports_progress_on_stderr_unless_told_not_to(monkeypatch, capsys):
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)
    cfg = Config().replace(model={"latent_dim": 2, "hidden": [16]}, train={"epochs": 1, "batch_size": 256})
    train_run(cfg)
    err = capsys.readouterr().err
    assert "epoch 1: 256/1300 ex (20%" in err
    train_run(cfg, progress=False)
    assert capsys.readouterr().err == ""


def test_the_log_likelihood_reports_progress(monkeypatch, capsys):
    from vaekit import VAE, load_dataset, log_likelihood

    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)
    x = load_dataset("digits").eval_split("test")
    model = VAE(data_dim=64, latent_dim=2, hidden=(16,))
    quiet = log_likelihood(model, x, k=10, batch_size=100)
    assert capsys.readouterr().err == ""
    shown = log_likelihood(model, x, k=10, batch_size=100, progress=True)
    assert "log-likelihood (k = 10): 100/297 ex (34%" in capsys.readouterr().err
    assert shown.mean == quiet.mean  # progress changes nothing in the numbers


def test_encode_decode_and_disentanglement_say_how_far_they_are(monkeypatch, capsys, caplog, tmp_path):
    import logging

    from vaekit import VAE, load_dataset
    from vaekit.cli import main
    from vaekit.disentanglement.scoring import score_codes
    from vaekit.evaluation.latents import posterior_summary

    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)
    x = load_dataset("digits").eval_split("train")
    model = VAE(data_dim=64, latent_dim=2, hidden=(16,))
    quiet = posterior_summary(model, x, batch_size=500)
    assert capsys.readouterr().err == ""
    shown = posterior_summary(model, x, batch_size=500, progress=True)
    assert "encoding: 500/1300 ex (38%" in capsys.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(quiet, shown))
    with caplog.at_level(logging.INFO, logger="vaekit"):
        score_codes(shown[0], torch.randint(0, 3, (1300, 2)), ["mig"], progress=True)
    assert "scoring mig on 1300 codes" in caplog.text
    assert main(["--quiet", "train", "--out", str(tmp_path / "run"), "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "8"]) == 0
    import numpy as np

    np.save(tmp_path / "z.npy", np.zeros((2500, 2), np.float32))
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "run"), "--latents", str(tmp_path / "z.npy"), "--out", str(tmp_path / "x.npy")]) == 0
    assert "decoding: 1000/2500 ex (40%" in capsys.readouterr().err
