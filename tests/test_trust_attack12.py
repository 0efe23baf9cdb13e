"""What the eleventh attack left and the twelfth and thirteenth found (issue 27), each made for real."""

import io
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
from test_errors import deflated_state
from test_trust_attack5 import one_line

from vaekit.cli import main
from vaekit.runs.checkpoint import load_state

SMALL = ("--likelihood", "gaussian", "--latent-dim", "2", "--hidden", "8", "--seed", "3")


def test_a_ctrl_c_while_the_command_starts_is_one_line(tmp_path):
    """A Ctrl-C in a command's first seconds (Python importing torch and vaekit's modules) printed a KeyboardInterrupt
    traceback out of an import and ended by the signal (-2); it is one line and 130, as later, at any moment."""
    rng = random.Random(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a suite run in the background of a shell inherits SIGINT ignored, and so would the children: a handler here
    # is reset to the default by exec, as in a terminal
    kept = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for i, delay in enumerate([0.3, 0.7, *(rng.uniform(0.9, 2.0) for _ in range(3))]):
            p = subprocess.Popen([sys.executable, "-m", "vaekit", "train", "--dataset", "digits", "--epochs", "1",
                                  "--out", str(tmp_path / f"r{i}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env)
            time.sleep(delay)
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=120)
            lines = [line for line in err.splitlines() if line.startswith("vaekit:") or "Traceback" in line]
            assert p.returncode == 130 and "Traceback" not in err and len(lines) == 1, (delay, p.returncode, err)
            assert lines[0] in ("vaekit: interrupted while starting; nothing was written", "vaekit: interrupted")
    finally:
        signal.signal(signal.SIGINT, kept)


def test_a_data_path_that_became_a_link_to_the_same_bytes_resumes(tmp_path, capsys):
    """The data file moved and a link to it left in its place: the resume blamed a config.json edit nobody made
    (paths were recorded resolved); the same bytes resume, other bytes behind the link are the digest's refusal. The
    thirteenth attack: the resume then recorded the link's target; the path stays as the user gave it, so every file
    is the straight run's."""
    data, run = tmp_path / "d.npy", tmp_path / "R"
    np.save(data, np.random.default_rng(0).random((200, 4), dtype=np.float32))
    assert main(["--quiet", "train", "--dataset", str(data), *SMALL, "--epochs", "2", "--out", str(tmp_path / "S")]) == 0
    assert main(["--quiet", "train", "--dataset", str(data), *SMALL, "--epochs", "1", "--out", str(run)]) == 0
    data.rename(tmp_path / "moved.npy")
    data.symlink_to(tmp_path / "moved.npy")
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "2", "--resume"]) == 0
    assert load_state(run)["epoch"] == 2 and json.loads((run / "config.json").read_text())["data"]["dataset"] == str(data)
    for name in ("config.json", "model.safetensors", "metrics.jsonl"):
        assert (run / name).read_bytes() == (tmp_path / "S" / name).read_bytes(), name
    assert load_state(run)["config"] == load_state(tmp_path / "S")["config"]
    np.save(tmp_path / "moved.npy", np.random.default_rng(1).random((200, 4), dtype=np.float32))
    said = one_line(capsys, "train", "--out", run, "--epochs", 3, "--resume")
    assert said.startswith(f"{data}: not the data this run was trained on (its sha256 differs")


def test_a_changed_image_folder_says_what_changed_in_it(tmp_path, capsys):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray((rng.random((6, 6)) * 255).astype("uint8")).save(folder / f"{i}.png")
    assert main(["--quiet", "train", "--dataset", str(folder), *SMALL, "--epochs", "1", "--out", str(tmp_path / "R")]) == 0
    (folder / "3.png").rename(folder / "30.png")
    assert one_line(capsys, "train", "--out", tmp_path / "R", "--epochs", 2, "--resume") == (
        f"{folder}: not the data this run was trained on (a file in this folder was added, removed, renamed or "
        "changed since the run recorded their sha256); restore them, or train a new run into another --out")
    (folder / "30.png").rename(folder / "3.png")
    assert main(["--quiet", "train", "--out", str(tmp_path / "R"), "--epochs", "2", "--resume"]) == 0


def _standardized_run(tmp_path, epochs):
    data = tmp_path / "g.npy"
    if not data.exists():
        np.save(data, np.random.default_rng(0).normal(size=(200, 5)).astype("float32") * 100 + 50)
    run = tmp_path / f"S{epochs}"
    assert main(["--quiet", "train", "--dataset", str(data), "--standardize", *SMALL, "--epochs", str(epochs),
                 "--out", str(run)]) == 0
    return run


def test_a_replaced_standardization_is_refused_on_resume_and_its_type_checked(tmp_path, capsys):
    """The twelfth attack's HIGH: a resume standardized the data by whatever standardization.safetensors held (the
    training ELBO −2.8e16, every file other than the straight run's). The file is held to the statistics of the
    training split now; restored, the run ends byte-identical to the straight one. And a file of complex, float16 or
    a spread of 1e-45 (every sample alike) is refused."""
    import torch
    from safetensors.torch import load_file, save_file
    straight, run = _standardized_run(tmp_path, 2), _standardized_run(tmp_path, 1)
    path = run / "standardization.safetensors"
    kept = path.read_bytes()
    save_file({"shift": torch.zeros(5), "spread": torch.ones(5)}, path)
    assert one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume") == (
        f"{path}: not the statistics of this run's training split (it would go on training on data scaled "
        "otherwise); restore it, or delete it and --resume computes it again")
    path.write_bytes(kept)
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "2", "--resume"]) == 0
    for name in ("model.safetensors", "train_state.pt", "metrics.jsonl"):
        assert (run / name).read_bytes() == (straight / name).read_bytes(), name
    saved = load_file(path)
    for tensors, said in (({"shift": saved["shift"].to(torch.complex64), "spread": saved["spread"]},
                           "holds shift (complex64), spread (float32), not the float32 shift and spread vaekit writes"),
                          ({"shift": saved["shift"], "spread": saved["spread"].half()},
                           "holds shift (float32), spread (float16), not the float32 shift and spread vaekit writes"),
                          ({"shift": saved["shift"], "spread": torch.full((5,), 1e-45)},
                           "spread must be at least 1e-30 (a constant dimension's is 1), found minimum 1.4013e-45")):
        save_file(tensors, path)
        assert one_line(capsys, "sample", run, "--n", 4) == f"{path}: {said}"


def test_the_twelfth_attacks_files(tmp_path, capsys):
    """A DEFLATE-compressed train_state.pt was inflated by torch.load before any check (3.9 MB took 4.2 GB); an .npz
    of three members just under 1 GiB each trained from 3 MB; a Parquet column of distinct long text was decoded
    whole before its cells were measured (56 KB took 7.4 GB); `train --out` inside the image folder it trains on made
    the run's files its examples."""
    import zipfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image
    run = tmp_path / "R"
    assert main(["--quiet", "train", "--dataset", "digits", *SMALL[2:], "--epochs", "1", "--out", str(run)]) == 0
    state = (run / "train_state.pt").read_bytes()
    deflated_state(run)
    said = one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume")
    assert said.startswith(f"{run / 'train_state.pt'} [") and "torch.save stores its records as they are: not a " \
        "file vaekit wrote" in said
    (run / "train_state.pt").write_bytes(state)
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "2", "--resume"]) == 0
    with zipfile.ZipFile(tmp_path / "b.npz", "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("train", "test", "val"):  # 100 MB of zeros each: 300 MB from ≈ 300 KB
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (25_000_000 // 64, 64)})
            z.writestr(f"{name}.npy", header.getvalue() + bytes(100_000_000))
    assert one_line(capsys, "train", "--dataset", tmp_path / "b.npz", *SMALL, "--out", tmp_path / "B").startswith(
        f"{tmp_path / 'b.npz'}: its members inflate to 300,000,")
    pq.write_table(pa.table({"a": [1.0] * 5000, "b": ["A" * 9990 + f"{i:010d}" for i in range(5000)]}),
                   tmp_path / "t.parquet", compression="zstd")
    said = one_line(capsys, "train", "--dataset", tmp_path / "t.parquet", "--likelihood", "mixed", "--out", tmp_path / "T")
    assert said.startswith(f"{tmp_path / 't.parquet'}: column 'b' holds 50,0") and said.endswith(
        " bytes of text for 5,000 rows; vaekit reads numbers, booleans and labels of at most 1,000 characters")
    (tmp_path / "imgs").mkdir()
    for i in range(20):
        Image.fromarray(np.full((6, 6), 10 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "c.json").write_text(json.dumps({"data": {"dataset": str(tmp_path / "imgs")}}))
    for given in (["--dataset", tmp_path / "imgs"], ["--config", tmp_path / "c.json"]):
        assert one_line(capsys, "train", *given, *SMALL, "--out", tmp_path / "imgs" / "R") == (
            f"--out {tmp_path / 'imgs' / 'R'}: lies in {tmp_path / 'imgs'}, a folder of images training reads (the "
            "run's files would become its examples); write the run elsewhere")
    assert not (tmp_path / "imgs" / "R").exists()


def test_the_twelfth_attacks_values(tmp_path, capsys):
    """A --sigma or --free-bits past float32 was a traceback out of torch.full_like (exit 1, a run of config.json
    alone left); API arguments of the wrong kind raised raw TypeErrors; a q_z of scale −1 gave NaN bounds (its
    stddev, √variance, is +1); a 10 MB key of a --config file was a 10 MB error line; --adam-eps 1e300 trained."""
    import pytest
    import torch

    import vaekit
    for argv, said in ((["--likelihood", "gaussian", "--sigma", "3.5e38"],
                        ("--sigma = 3.5e+38 is out of range (float32 holds at most "
                        "3.403e+38)")),
                       (["--free-bits", "1e300"], ("--free-bits = 1e+300 is out of range "
                        "(float32 holds at most 3.403e+38)")),
                       (["--adam-eps", "1e300"], "--adam-eps must be > 0 and <= 1, got 1e+300")):
        assert one_line(capsys, "train", "--dataset", "digits", *argv, "--out", tmp_path / "A") == said
        assert not (tmp_path / "A").exists()
    (tmp_path / "big.json").write_text('{"' + "k" * 1_000_000 + '": 1}')
    said = one_line(capsys, "train", "--config", tmp_path / "big.json", "--out", tmp_path / "A")
    assert len(said) < 2100 and said.endswith("… (cut at 2,000 characters)")
    for call, message in ((lambda: vaekit.StandardNormal(-1), "StandardNormal: latent_dim must be a whole number ≥ 1"),
                          (lambda: vaekit.StandardNormal("3"), "StandardNormal: latent_dim must be a whole number ≥ 1"),
                          (lambda: vaekit.train_run(None), "train_run: takes a vaekit.Config, got NoneType"),
                          (lambda: vaekit.build_model({"latent_dim": [2]}), "build_model: takes a vaekit.ModelConfig"),
                          (lambda: vaekit.load_plugin(5), "load_plugin: name a .py file or an importable module"),
                          (lambda: vaekit.VAE(None, None, None), "VAE: give data_dim")):
        with pytest.raises(vaekit.VaekitError) as e:
            call()
        assert str(e.value).startswith(message)
    model = vaekit.VAE(data_dim=4, latent_dim=3)
    q = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2, 3), -torch.ones(2, 3),
                                                                   validate_args=False), 1)
    for bound in (vaekit.elbo, vaekit.iwae):
        with pytest.raises(vaekit.VaekitError, match="q_z's standard deviation must be finite and > 0"):
            bound(model, torch.ones(2, 4), q_z=q, **({"k": 1} if bound is vaekit.iwae else {}))


def test_a_csv_cell_is_held_to_the_length_a_parquet_cell_is(tmp_path):
    """Parquet refused text cells over 1,000 characters, CSV trained on cells of 100,000."""
    import pytest

    import vaekit
    (tmp_path / "t.csv").write_text("a,b\n" + "1,x\n" * 5 + "2," + "y" * 1001 + "\n")
    with pytest.raises(vaekit.VaekitError) as e:
        vaekit.read_table(tmp_path / "t.csv")
    assert str(e.value) == (f"{tmp_path / 't.csv'}: line 7 holds a cell of 1,001 characters (column 2); vaekit reads "
                            "numbers, booleans and labels of at most 1,000")
    (tmp_path / "t.csv").write_text("a,b\n" + "1,x\n" * 5 + "2," + "y" * 1000 + "\n")
    assert vaekit.read_table(tmp_path / "t.csv").codes.shape[0] == 6


def test_the_thirteenth_attacks_faults(tmp_path, capsys):
    """A dictionary<string> Parquet column escaped the footer's text check (28 KB took 3.9 GB); a state's integer of
    400 digits was an OverflowError traceback; statistics within 1e-5 of the training split's trained on, other than
    the straight run; VAE(data_dim=(1, 8, 8)), a negative data_shape and statistics given as text raised raw."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest
    import torch
    from safetensors.torch import load_file, save_file

    import vaekit
    column = pa.array([f"{i:03d}" + "A" * 100_000 for i in range(30)]).dictionary_encode()
    pq.write_table(pa.table({"a": [1.0] * 30, "b": column}), tmp_path / "d.parquet", compression="zstd")
    said = one_line(capsys, "train", "--dataset", tmp_path / "d.parquet", "--likelihood", "mixed", "--out", tmp_path / "D")
    assert said.startswith(f"{tmp_path / 'd.parquet'}: column 'b' holds 3,000,") and " bytes of text for 30 rows" in said
    run = _standardized_run(tmp_path, 1)
    state = load_state(run)
    torch.save({**state, "batch": 10**400}, run / "train_state.pt")
    assert one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume").startswith(
        f"{run / 'train_state.pt'}: batch is a whole number beyond 2**63")
    torch.save(state, run / "train_state.pt")
    path = run / "standardization.safetensors"
    kept = load_file(path)
    save_file({"shift": kept["shift"] * (1 + 5e-6), "spread": kept["spread"]}, path)
    assert one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume").startswith(
        f"{path}: not the statistics of this run's training split")
    for call, message in ((lambda: vaekit.VAE(data_dim=(1, 8, 8), latent_dim=2), "VAE: data_dim must be a size"),
                          (lambda: vaekit.VAE(data_dim=64, latent_dim=2, data_shape=(1, -8, 8)),
                           "VAE: data_shape must be sizes of whole numbers ≥ 1"),
                          (lambda: vaekit.load_dataset("wine", support="real", standardize=True, shift="abc",
                                                       spread=[1] * 13), "wine: shift must be numbers")):
        with pytest.raises(vaekit.VaekitError) as e:
            call()
        assert str(e.value).startswith(message)


def _lie_about_sizes(path, said=100):
    """Rewrite every column chunk's total_uncompressed_size in the footer to `said` (an overlong varint of the same
    length, so no offset moves): what pyarrow then allocates by is the pages' headers alone."""
    import struct

    import pyarrow.parquet as pq

    def varint(u, width=None):
        out = bytearray()
        while True:
            b, u = u & 0x7F, u >> 7
            more = u if width is None else len(out) < width - 1
            out.append(b | 0x80 if more else b)
            if not more:
                return bytes(out)

    data = bytearray(path.read_bytes())
    footer = len(data) - 8 - struct.unpack("<I", data[-8:-4])[0]
    meta = pq.ParquetFile(path).metadata
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            size = meta.row_group(g).column(c).total_uncompressed_size
            field = b"\x16" + varint(size << 1)  # field 6 (total_uncompressed_size), i64, zigzag
            at = data.find(field, footer)
            data[at + 1:at + len(field)] = varint(said << 1, len(field) - 1)
    path.write_bytes(bytes(data))
    assert pq.ParquetFile(path).metadata.row_group(0).column(1).total_uncompressed_size == said


def test_a_parquet_footer_that_lies_about_its_sizes_is_held_to_its_pages(tmp_path, capsys):
    """The footer's sizes are the writer's word: rewritten to 100 bytes a column, a 37 KB file of distinct long text
    took 4.8–6.0 GB (the thirteenth attack). Each page's header, what pyarrow allocates by, is read first."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    for dictionary in (False, True):
        path = tmp_path / f"lie{dictionary}.parquet"
        pq.write_table(pa.table({"a": [1.0] * 20, "b": [f"{i:03d}" + "A" * 100_000 for i in range(20)]}), path,
                       compression="zstd", use_dictionary=dictionary)
        _lie_about_sizes(path)
        said = one_line(capsys, "train", "--dataset", path, "--likelihood", "mixed", "--out", tmp_path / "R")
        assert said.startswith(f"{path}: column 'b' holds 2,000,") and said.endswith(
            " bytes of text for 20 rows; vaekit reads numbers, booleans and labels of at most 1,000 characters")


def test_the_thirteenth_attacks_lows(tmp_path, capsys, caplog):
    """What the thirteenth attack found LOW: a categorical model past the weight bound (its 256 outputs a value were
    not counted: a raw out-of-memory), a Config built in Python unchecked (epochs −1 trained), API arguments taken as
    they came, a metric of 5,000 digits (Python's own advice), statistics of 3e38 (samples of Inf), odd cells in a
    number column, and --sigma 1e-320 (the generic NaN line)."""
    import logging

    import pytest
    import torch
    from test_errors import standardized

    import vaekit
    from vaekit.errors import VaekitError

    with pytest.raises(VaekitError, match=f"maps 8 inputs to {256 * 2**25:,} outputs"):  # a 256-way softmax a value
        vaekit.VAE(data_dim=2**25, latent_dim=[2], hidden=[8], likelihood="categorical")
    vaekit.VAE(data_dim=2**13, latent_dim=[2], hidden=[8], likelihood="categorical")  # 2**24 weights: built
    with pytest.raises(VaekitError, match=r"train_run: takes a vaekit.Config, got Config.model = 5 \(a ModelConfig"):
        vaekit.train_run(vaekit.Config(model=5))
    with pytest.raises(VaekitError, match=r"train_run: \[train\] epochs must be > 0, got -1"):
        vaekit.train_run(vaekit.Config(train=vaekit.TrainConfig(epochs=-1)))
    with pytest.raises(VaekitError, match=r"data_shape \(1, 8, 7\) holds 56 values, but data_dim is 64"):
        vaekit.VAE(data_dim=64, data_shape=(1, 8, 7), latent_dim=[2], hidden=[8])
    for call, said in [(lambda: vaekit.save(torch.nn.Linear(2, 2), tmp_path / "s"), "the model must be a VAE"),
                       (lambda: vaekit.Encoder("net", "diagonal"), "Encoder: net must be a torch module"),
                       (lambda: vaekit.Decoder("net", "bernoulli"), "Decoder: net must be a torch module"),
                       (lambda: vaekit.register_prior(5), "prior name 5: use letters"),
                       (lambda: vaekit.load_dataset("digits", overrides=5), "overrides must be a dict"),
                       (lambda: vaekit.load_dataset("digits", mmap="yes"), "mmap must be True or False")]:
        with pytest.raises(VaekitError, match=said):
            call()
    assert not (tmp_path / "s").exists()
    run = tmp_path / "R"
    assert main(["--quiet", "train", "--dataset", "digits", "--latent-dim", "2", "--hidden", "8", "--epochs", "1",
                 "--out", str(run)]) == 0
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train/elbo": ' + "9" * 5000 + "}\n")
    assert one_line(capsys, "plot", run, "--out", tmp_path / "p") == (
        f"{run / 'metrics.jsonl'}: line 2 is not a metrics record (a whole number of 5,000 digits)")
    big = standardized(tmp_path, shift=torch.full((13,), 3e38), spread=torch.full((13,), 3e38))
    said = one_line(capsys, "sample", big, "--n", "4", "--output", tmp_path / "x.npy")
    assert said.startswith(f"{big}/standardization.safetensors: shift + spread · x passes float32's range")
    assert not (tmp_path / "x.npy").exists()
    rows = [f"{i},{'xyz'[i % 3]}" for i in range(30)] + ["0x1F,x", "1_000,y", "+inf,z"]
    (tmp_path / "odd.csv").write_text("a,b\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        table = vaekit.read_table(tmp_path / "odd.csv")
    assert table.schema.columns[0].kind == "categorical" and len(table.schema.columns[0].levels) == 33
    assert [r.getMessage() for r in caplog.records if "numbers except" in r.getMessage()] == [
        ("column 'a': numbers except for '+inf', '0x1F', '1_000' (3 cells), so it is read as 33 levels; leave a missing "
        "value's cell empty and write a number as digits (or give --column-type a=categorical)")]
    for flag, value, said in [("--sigma", "1e-320", "sigma must be >= 1e-06, got 1e-320"),
                              ("--adam-eps", "1e-320", "--adam-eps = 9.99989e-321 is out of range (float32's smallest"),
                              ("--sigma", "1e-30", "sigma must be >= 1e-06, got 1e-30"),
                              ("--lr", "1e-39", "lr = 1e-39 is out of range (float32's smallest normal")]:
        got = one_line(capsys, "train", "--dataset", "wine", "--likelihood", "gaussian", flag, value, "--out",
                       tmp_path / "W")
        assert said in got, got


def test_the_fourteenth_attacks_lows(tmp_path, capsys):
    """VAE(data_dim=(64,)) and train_run(out=5) raised raw; a refused train left the empty folders above --out (inside
    an image folder too); a 5,000-digit integer in a config file showed Python's advice; `--dataset ''` was read as
    the current folder; a level cell of 23 digits was quoted as '1e+23'."""
    import pytest

    import vaekit
    from vaekit.errors import VaekitError

    assert vaekit.VAE(data_dim=(64,), latent_dim=[2], hidden=[8]).decoder.data_dim == 64
    with pytest.raises(VaekitError, match="train_run: out must name a folder for the run"):
        vaekit.train_run(vaekit.Config(), out=5)
    one_line(capsys, "train", "--dataset", "digits", "--val-size", "0", "--patience", "2", "--out", tmp_path / "a/b/c/R")
    assert not (tmp_path / "a").exists()
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "x").write_text("")
    one_line(capsys, "train", "--dataset", "digits", "--val-size", "0", "--patience", "2", "--out", tmp_path / "keep/b/R")
    assert sorted(p.name for p in (tmp_path / "keep").iterdir()) == ["x"]  # what was there stays
    (tmp_path / "big.toml").write_text("[train]\nepochs = " + "9" * 5000 + "\n")
    (tmp_path / "big.json").write_text('{"train": {"epochs": ' + "9" * 5000 + "}}")
    assert one_line(capsys, "train", "--config", tmp_path / "big.toml", "--out", tmp_path / "R").endswith(
        "big.toml: not valid TOML (a whole number of more than 4,300 digits)")
    assert one_line(capsys, "train", "--config", tmp_path / "big.json", "--out", tmp_path / "R").endswith(
        "big.json: not valid JSON (a whole number of 5,000 digits)")
    assert "--dataset is empty; name a dataset" in one_line(capsys, "train", "--dataset", "", "--out", tmp_path / "E")
    from vaekit.data.tables import Schema, encode

    schema = Schema.from_plain([{"name": "c", "kind": "categorical", "levels": ["0", "1", "2"]}], "test")
    with pytest.raises(VaekitError, match=r"t.csv: line 2, column 'c': '99999999999999999999999' is not one of its lev"):
        encode([["99999999999999999999999"]], [2], schema, "t.csv")
