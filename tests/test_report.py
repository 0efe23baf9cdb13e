"""report.html: one self-contained file with every picture embedded and the run's numbers."""

import base64
import html
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pngread import read_png

import vaekit
from vaekit.cli import main
from vaekit.pictures.report import run_metrics, write_report

pytest.importorskip("matplotlib")

CHROMIUM = Path("/usr/bin/chromium")
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = tmp_path_factory.mktemp("report") / "run"
    cfg = vaekit.Config().replace(model={"latent_dim": 3, "hidden": [32]}, train={"epochs": 2, "batch_size": 128})
    vaekit.train_run(cfg, run)
    return write_report(run, k=20)


def test_every_picture_is_embedded(report):
    page = report.read_text(encoding="utf-8")
    assert report.name == "report.html" and page.startswith("<!DOCTYPE html>")
    images = IMG.findall(page)
    pngs = sorted(p.stem for p in report.parent.glob("*.png"))
    assert len(images) == len(pngs) == 6  # samples, reconstructions, latent map, traversals, interpolations, curves
    for stem in pngs:
        assert f'alt="{stem}"' in page
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from the network


def test_report_holds_the_metrics(report):
    page = report.read_text(encoding="utf-8")
    m = run_metrics(report.parent, k=20)  # seeded: the same numbers the report computed
    for key in ("elbo", "reconstruction", "kl", "nll"):
        assert f"{m[key]:.3f}" in page
    assert f"{m['bits_per_dim']:.4f}" in page
    # both errors, each named: over the examples (±) and Monte Carlo (its own row), with the ESS
    assert f"{m['log_likelihood']:.3f} ± {m['log_likelihood_stderr']:.3f}" in page
    assert f"<td>Monte Carlo standard error</td><td>{m['log_likelihood_mc_stderr']:.4f}</td>" in page
    assert f"median {m['ess_median']:.1f}, min {m['ess_min']:.1f}" in page and m["bound_check"] == "ok"
    assert f"{m['active_units']} of 3" in page
    for v in m["kl_per_dim"]:
        assert f"<td>{v:.3f}</td>" in page
    assert abs(m["nll"] + m["log_likelihood"]) < 1e-12 and re.search(r'"latent_dim": \[\s*3\s*\]', page)


def non_white(path):
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"))
    return int((pixels < 200).sum())


def screenshot(html: Path, tmp: Path) -> Path:
    shot = tmp / "shot.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1200,3000", html.resolve().as_uri()],
                   capture_output=True, timeout=120, check=True)
    return shot


def test_report_renders_in_a_browser(report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("chromium not installed (apt-get install chromium)")
    pytest.importorskip("PIL")
    with_images = non_white(screenshot(report, tmp_path / "a"))
    # the same page with every picture removed: what the pictures add is what the browser drew for them
    bare = tmp_path / "bare.html"
    bare.write_text(IMG.sub('<img src="" width="0" height="0"', report.read_text(encoding="utf-8")), encoding="utf-8")
    without = non_white(screenshot(bare, tmp_path / "b"))
    assert with_images - without > 100_000, (with_images, without)  # measured: ≈ 260,000 at 1200×3000


def test_cli_report(report, capsys):
    """`vaekit report --k 10` writes a page with `vaekit evaluate --k 10 --json`'s numbers (the same seed
    0 and split), the run's saved config.json section for section, and each picture's PNG file byte for byte."""
    run = report.parent
    assert main(["report", str(run), "--k", "10"]) == 0
    assert "report.html" in capsys.readouterr().out
    page = report.read_text(encoding="utf-8")
    assert main(["evaluate", str(run), "--k", "10", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["k"] == 10 and m["split"] == "test"

    def cell(name, value):  # a row of the metrics table: its name and its value, as the page escapes them
        return f"<tr><td>{html.escape(name)}</td><td>{html.escape(value)}</td>"

    for name, key in [("ELBO", "elbo"), ("reconstruction E_Q[log p(x|z)]", "reconstruction"),
                      ("KL(Q(z|x) ‖ p(z))", "kl"), ("NLL", "nll")]:
        assert cell(name, f"{m[key]:.3f}") in page, name
    assert cell("log-likelihood", f"{m['log_likelihood']:.3f} ± {m['log_likelihood_stderr']:.3f}") in page
    assert cell("bits/dim", f"{m['bits_per_dim']:.4f}") in page and "k = 10 importance samples" in page
    assert cell("active units", f"{m['active_units']} of 3") in page and f"n = {m['n']})" in page
    assert "<tr>" + "".join(f"<td>{v:.3f}</td>" for v in m["kl_per_dim"]) + "</tr>" in page
    shown = json.loads(html.unescape(re.search(r"<h2>Config</h2><pre>(.*?)</pre>", page, re.DOTALL).group(1)))
    saved = json.loads((run / "config.json").read_text())
    assert {"model", "data", "train"} <= set(shown) and all(shown[k] == saved[k] for k in shown)
    assert shown["train"]["epochs"] == 2 and shown["model"]["latent_dim"] == [3]
    embedded = dict(zip(re.findall(r'alt="([^"]+)"', page), IMG.findall(page)))
    assert sorted(embedded) == sorted(p.stem for p in run.glob("*.png"))
    for stem, data in embedded.items():
        assert base64.b64decode(data) == (run / f"{stem}.png").read_bytes(), stem
        assert read_png(run / f"{stem}.png").shape[2] == 3  # decodes: chunks and CRCs checked

