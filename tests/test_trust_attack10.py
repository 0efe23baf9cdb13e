"""What the ninth attack left and the tenth found (issue 27), each made for real."""

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from test_trust_attack5 import one_line

import vaekit
from vaekit.cli import main
from vaekit.runs.checkpoint import load_state

TRAIN = ("train", "--dataset", "digits", "--latent-dim", 2, "--hidden", 16, "--seed", 3)


def test_a_config_record_emptied_by_hand_does_not_turn_the_resume_check_off(tmp_path, capsys):
    """A record of empty sections skipped every setting, so a hand-edited β went on silently; a setting the record
    lacks is now taken at its default, and a record that lost one field is checked on the rest."""
    run = tmp_path / "r"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "1", "--out", str(run)]) == 0
    state = load_state(run)
    record = json.loads(state["config"])
    state["config"] = json.dumps({"model": {}, "data": {}, "train": {}})
    torch.save(state, run / "train_state.pt")
    said = one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume")
    assert said.startswith(f"{run / 'config.json'}: [model] data_shape = [1, 8, 8], but train_state.pt was trained "
                           "with []: config.json was changed since the last checkpoint")
    del record["train"]["objective"]["beta"], record["model"]["latent_dim"]  # a state of a vaekit that lacked both
    state["config"] = json.dumps(record)
    original = (run / "config.json").read_text()
    edited = json.loads(original)
    edited["train"]["objective"]["beta"] = 4.0
    (run / "config.json").write_text(json.dumps(edited))
    torch.save(state, run / "train_state.pt")
    said = one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume")
    assert said.startswith(f"{run / 'config.json'}: [model] latent_dim = [2], but train_state.pt was trained with [20]")
    record["model"]["latent_dim"] = [2]
    state["config"] = json.dumps(record)
    torch.save(state, run / "train_state.pt")
    said = one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume")
    assert said.startswith(f"{run / 'config.json'}: [train.objective] beta = 4.0, but train_state.pt was trained with "
                           "1.0")
    (run / "config.json").write_text(original)
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "2", "--resume"]) == 0
    assert load_state(run)["epoch"] == 2


def test_a_resume_on_a_changed_data_file_is_refused_and_its_statistics_never_come_from_it(tmp_path, capsys):
    """The CLI recorded only the data file's path: a resume trained on whatever the file held by then, and a lost
    standardization was computed again from it. The file's sha256 is recorded now, and a changed file refused."""
    data, run = tmp_path / "d.npy", tmp_path / "R"
    np.save(data, np.random.default_rng(0).random((300, 4), dtype=np.float32))
    assert main(["--quiet", "train", "--dataset", str(data), "--likelihood", "gaussian", "--standardize", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "8", "--out", str(run)]) == 0
    recorded = json.loads((run / "config.json").read_text())["data"]["digest"]
    assert recorded == _digest_of(data)
    np.save(data, np.random.default_rng(1).random((40, 4), dtype=np.float32) + 5)
    (run / "standardization.safetensors").unlink()
    said = one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume")
    size = json.loads((run / "config.json").read_text())["data"]["size"]  # 300 rows recorded, 40 now: told by size
    assert size == data.stat().st_size + 260 * 4 * 4
    assert said == (f"{data}: not the data this run was trained on (its size is not the {size:,} bytes config.json "
                    "records); restore that file, or train a new run into another --out")
    assert not (run / "standardization.safetensors").exists() and load_state(run)["epoch"] == 1
    np.save(data, np.random.default_rng(0).random((300, 4), dtype=np.float32))  # the same bytes again: it goes on
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "2", "--resume"]) == 0
    assert load_state(run)["epoch"] == 2


def _digest_of(path):
    return hashlib.sha256(b"\0" + hashlib.sha256(path.read_bytes()).digest()).hexdigest()


def test_out_never_names_what_the_command_reads(tmp_path, capsys):
    """`encode RUN --out DATA.npy` wrote the codes over the run's training data (a resume then trained on them);
    `score --data t.csv --out t.csv` replaced the table with its scores; `sample --out RUN/model.safetensors` the
    weights. Each is refused in one line, and the file keeps its bytes."""
    data, run = tmp_path / "d.npy", tmp_path / "R"
    np.save(data, np.random.default_rng(0).random((300, 4), dtype=np.float32))
    assert main(["--quiet", "train", "--dataset", str(data), "--likelihood", "gaussian", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "8", "--out", str(run)]) == 0
    kept = {p: p.read_bytes() for p in (data, run / "model.safetensors")}
    assert one_line(capsys, "encode", run, "--out", data) == (
        f"--out {data}: is the run's training data, which this command reads; write to another file")
    assert one_line(capsys, "sample", run, "--out", run / "model.safetensors") == (
        f"--out {run / 'model.safetensors'}: is the run's model.safetensors, which this command reads; write to another "
        "file")
    assert one_line(capsys, "sample", run, "--out", tmp_path / "d.png") == (  # sample writes d.npy beside d.png
        f"--out {tmp_path / 'd.npy'}: is the run's training data, which this command reads; write to another file")
    assert main(["--quiet", "encode", str(run), "--out", str(tmp_path / "z.npy")]) == 0
    assert one_line(capsys, "decode", run, "--latents", tmp_path / "z.npy", "--out", tmp_path / "." / "z.npy") == (
        f"--out {tmp_path / 'z.npy'}: is --latents, which this command reads; write to another file")
    with open(tmp_path / "t.csv", "w", newline="") as f:
        f.write("a,b\n" + "".join(f"{i / 7:.3f},{'xy'[i % 2]}\n" for i in range(60)))
    assert main(["--quiet", "train", "--dataset", str(tmp_path / "t.csv"), "--likelihood", "mixed", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "8", "--out", str(tmp_path / "T")]) == 0
    table = (tmp_path / "t.csv").read_bytes()
    for command in ("score", "impute"):
        assert one_line(capsys, command, tmp_path / "T", "--data", tmp_path / "t.csv", "--out", tmp_path / "t.csv") == (
            f"--out {tmp_path / 't.csv'}: is --data, which this command reads; write to another file")
    assert (tmp_path / "t.csv").read_bytes() == table and all(p.read_bytes() == b for p, b in kept.items())


def test_a_parquet_file_of_little_bytes_and_much_text_is_refused_before_it_is_decoded(tmp_path, capsys, monkeypatch):
    """The cap counted cells, not their text: a 1.6 KB file of one 10,000-character value repeated 100,000 times
    decoded to 1 GB (3 GB of memory read); a 6 KB one ran the machine out of memory. Text is measured encoded now."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    from vaekit.data import table_files
    pq.write_table(pa.table({"a": np.zeros(100_000), "s": pa.array(["x" * 10_000] * 100_000)}), tmp_path / "b.parquet")
    assert (tmp_path / "b.parquet").stat().st_size < 5000
    said = one_line(capsys, "train", "--dataset", tmp_path / "b.parquet", "--likelihood", "mixed", "--epochs", 1,
                    "--out", tmp_path / "r")
    assert said == (f"{tmp_path / 'b.parquet'}: column 's' holds a text cell of 10,000 characters; vaekit reads "
                    "numbers, booleans and labels of at most 1,000")
    labels = [f"level {i}" + "y" * 900 for i in range(3)]  # cells within the cap, their sum not
    pq.write_table(pa.table({"a": np.arange(3000.0), "s": pa.array(labels * 1000)}), tmp_path / "c.parquet")
    total = 1000 * sum(len(label) for label in labels)
    monkeypatch.setattr(table_files, "MAX_TABLE_BYTES", total - 1)
    with pytest.raises(vaekit.VaekitError) as e:
        vaekit.read_table(tmp_path / "c.parquet")
    assert str(e.value) == (f"{tmp_path / 'c.parquet'}: its text cells hold {total:,} characters, more than the "
                            f"{total - 1:,} vaekit reads from a table; split it, or keep the columns the model needs")
    monkeypatch.setattr(table_files, "MAX_TABLE_BYTES", total)
    table = vaekit.read_table(tmp_path / "c.parquet")  # at the cap: read, the labels decoded as written
    assert sorted({row[1] for row in table.cells}) == labels


@pytest.mark.parametrize("name", ["a\u2060b", "a\u200db", "a\u00adb", "a\u061cb", "a\u2062b", "a\U000e0041b"])
def test_a_header_name_with_an_invisible_format_character_is_refused(tmp_path, name):
    """Word joiner, zero-width joiner, soft hyphen, the Arabic letter mark, invisible times, a tag character: each
    printed as `ab` beside a real `ab` column (the whole format category, Cf, is refused now)."""
    (tmp_path / "h.csv").write_text(f"{name},ab\n1,2\n3,4\n", encoding="utf-8")
    with pytest.raises(vaekit.VaekitError) as e:
        vaekit.read_table(tmp_path / "h.csv")
    assert str(e.value) == f"{tmp_path / 'h.csv'}: column 1 of the header, {name!r}, holds a control character; rename it"


def test_header_names_equal_but_for_compatibility_forms_and_a_tab_separated_file(tmp_path):
    (tmp_path / "h.csv").write_text("\uff41,a\n1,2\n3,4\n", encoding="utf-8")  # fullwidth ａ and a
    with pytest.raises(vaekit.VaekitError, match=r"h.csv: the header names column 'ａ' twice$"):
        vaekit.read_table(tmp_path / "h.csv")
    (tmp_path / "t.tsv").write_text("a\tb\n1\t2\n3\t4\n")
    with pytest.raises(vaekit.VaekitError) as e:
        vaekit.read_table(tmp_path / "t.tsv")
    assert str(e.value) == (f"{tmp_path / 't.tsv'}: the header is one column holding tabs; vaekit reads comma-separated "
                            "tables: write the file as CSV")


def test_a_finished_run_holds_an_empty_lock_so_two_processes_of_one_seed_write_the_same_bytes(tmp_path):
    """.vaekit.lock kept the last holder's pid: two `vaekit train --seed 3` processes differed in that file alone."""
    import subprocess
    import sys
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-m", "vaekit", "--quiet", *map(str, TRAIN), "--epochs", "1", "--threads", "1",
                        "--out", str(tmp_path / name)], check=True, capture_output=True)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert ".vaekit.lock" in files and files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / ".vaekit.lock").read_bytes() == b""


def test_python_arguments_of_the_wrong_kind_and_an_infinite_q_are_one_line(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,x\n2,y\n3,x\n")
    for call, said in [
        (lambda: vaekit.load_dataset("digits", split_seed="1"), "load_dataset: split_seed must be a whole number from 0 to "),
        (lambda: vaekit.load_dataset("digits", split_seed=-1), "load_dataset: split_seed must be a whole number from 0 to "),
        (lambda: vaekit.load_dataset("digits", val_size=0.5), "load_dataset: val_size must be a number of examples ≥ 0 "),
        (lambda: vaekit.load_dataset("mnist", data_dir=5), "load_dataset: data_dir must be a folder's path (or None), got 5"),
        (lambda: vaekit.read_table(tmp_path / "t.csv", schema="x"), "read_table: schema must be a run's Schema "),
        (lambda: vaekit.read_table(tmp_path / "t.csv", overrides="ab"), "read_table: overrides must be a mapping "),
        (lambda: vaekit.read_table(tmp_path / "t.csv", overrides=5), "read_table: overrides must be a mapping "),
    ]:
        with pytest.raises(vaekit.VaekitError) as e:
            call()
        assert str(e.value).startswith(said) and "\n" not in str(e.value), str(e.value)
    torch.manual_seed(0)
    model = vaekit.VAE(data_dim=64, latent_dim=2, hidden=(16,))
    x = (vaekit.load_dataset("digits").eval_split("test")[:5] > 0.5).float()
    wide = torch.distributions.Independent(torch.distributions.Normal(
        torch.zeros(5, 2), torch.full((5, 2), float("inf")), validate_args=False), 1)
    for bound in (lambda q_z: vaekit.elbo(model, x, q_z=q_z), lambda q_z: vaekit.iwae(model, x, k=3, q_z=q_z)):
        for q_z in (wide, torch.distributions.Independent(torch.distributions.Normal(
                torch.zeros(5, 2), torch.zeros(5, 2), validate_args=False), 1)):  # Inf, and a scale of 0
            with pytest.raises(vaekit.VaekitError, match=r"^q_z's standard deviation must be finite and > 0; it holds "):
                bound(q_z)


def test_decode_of_latents_beyond_reach_writes_nothing_rather_than_inf(tmp_path, capsys):
    data, run = tmp_path / "d.npy", tmp_path / "R"
    np.save(data, np.random.default_rng(0).random((300, 4), dtype=np.float32) * 1e30)
    assert main(["--quiet", "train", "--dataset", str(data), "--likelihood", "gaussian", "--standardize", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "8", "--out", str(run)]) == 0
    np.save(tmp_path / "z.npy", np.array([[0.0, 0.5], [1e38, -1e38]], np.float32))
    said = one_line(capsys, "decode", run, "--latents", tmp_path / "z.npy", "--out", tmp_path / "x.npy")
    assert said == (f"{tmp_path / 'z.npy'}: row 2 (of 2) decodes to Inf or NaN: its latents (|z| up to 1e+38) lie far "
                    "beyond where p(z) puts mass; nothing written")
    assert not (tmp_path / "x.npy").exists()
    np.save(tmp_path / "z.npy", np.array([[0.0, 0.5], [1.0, -1.0]], np.float32))
    assert main(["--quiet", "decode", str(run), "--latents", str(tmp_path / "z.npy"), "--out", str(tmp_path / "x.npy")]) == 0
    assert np.isfinite(np.load(tmp_path / "x.npy")).all()


def test_a_network_of_a_hundred_thousand_layers_is_refused_before_it_is_built(tmp_path, capsys):
    """hidden = [8] × 100,000 passed the weight bound: 7 GB, 40 s a step, a 600 MB checkpoint."""
    (tmp_path / "deep.json").write_text(json.dumps({"model": {"hidden": [8] * 100_000}}))
    said = one_line(capsys, "train", "--dataset", "digits", "--config", tmp_path / "deep.json", "--epochs", 1,
                    "--out", tmp_path / "r")
    assert said.endswith("hidden lists 100,000 layers; vaekit builds at most 1,000")
    with pytest.raises(vaekit.VaekitError, match=r"^VAE: latent_dim lists 1,001 groups; vaekit builds at most 1,000$"):
        vaekit.VAE(data_dim=4, latent_dim=[1] * 1001, inference="top-down")
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_messages_the_tenth_attack_found_wanting(tmp_path, capsys):
    """Each one line that says what is wrong: a JSON config with a key twice (the last won, silently), a folder as a
    config (called a FIFO), a .npy whose header claims 32 PiB (called out of memory), a ragged latents CSV (an
    IndexError), --elbo-samples past its bound (named by the API's keyword), a pickled state (advice that failed)."""
    (tmp_path / "dup.json").write_text('{"train": {"epochs": 1, "epochs": 3}}')
    assert one_line(capsys, "train", "--dataset", "digits", "--config", tmp_path / "dup.json", "--out", tmp_path / "r") == (
        f"{tmp_path / 'dup.json'}: not valid JSON (the key 'epochs' is given twice)")
    (tmp_path / "folder").mkdir()
    assert one_line(capsys, "train", "--dataset", "digits", "--config", tmp_path / "folder", "--out", tmp_path / "r") == (
        f"{tmp_path / 'folder'}: not a regular file (a folder)")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**50, 8)})
    (tmp_path / "bomb.npy").write_bytes(header.getvalue() + bytes(16))
    assert one_line(capsys, "train", "--dataset", tmp_path / "bomb.npy", "--likelihood", "gaussian", "--out",
                    tmp_path / "r") == (
        f"{tmp_path / 'bomb.npy'}: its header claims an array of shape (1125899906842624, 8) (36,028,797,018,963,968 "
        "bytes), but the file holds 16 bytes after it; the file is cut short or damaged")
    run = tmp_path / "R"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "1", "--out", str(run)]) == 0
    (tmp_path / "z.csv").write_text("a,b\n1,2\n3\n")
    assert one_line(capsys, "decode", run, "--latents", tmp_path / "z.csv", "--out", tmp_path / "x.npy") == (
        f"{tmp_path / 'z.csv'}: line 3 has 1 cells, but line 1 has 2; give every row as many")
    assert one_line(capsys, "evaluate", run, "--elbo-samples", 10**8) == (
        "--elbo-samples 100000000 is out of range: draws per example from 1 to 1,000,000")
    torch.save({"x": Exception("not a tensor")}, run / "train_state.pt")
    assert one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume").endswith(
        "vaekit never unpickles it; restore it, or delete it and model.safetensors and pass --resume to start the run "
        "again from step 0")
    (run / "train_state.pt").unlink()
    (run / "model.safetensors").unlink()  # what the advice says: then the resume starts again from step 0
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "1", "--resume"]) == 0
    assert load_state(run)["epoch"] == 1


def test_reproduce_list_keeps_its_columns_for_the_longest_name(capsys):
    from vaekit.runs.recipes import RECIPES
    assert main(["reproduce", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()[: len(RECIPES) + 1]
    starts = {line.index(r.ours) for line, r in zip(lines[1:], RECIPES, strict=True)}  # the long names pushed it on
    assert starts == {lines[0].index("ours")}


def test_the_eleventh_attacks_faults(tmp_path, capsys, caplog):
    """An empty train_state.pt was a traceback (an EOFError without a message); a state of other Adam betas or eps
    trained on; a state without a config record resumed silently; a semicolon-separated table trained as one
    column; a variation selector made twin column names; --out wrote into the image folder a run trains on."""
    run = tmp_path / "R"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "1", "--out", str(run)]) == 0
    state = load_state(run)
    (run / "train_state.pt").write_bytes(b"")
    assert one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume").startswith(
        f"{run / 'train_state.pt'}: cannot load trainer state safely (EOFError: empty); vaekit never unpickles it")
    for key, value, said in (("eps", 1.0, "eps is 1.0, but this run's optimizer has 1e-08"),
                             ("betas", (0.5, 0.5), "betas is (0.5, 0.5), but this run's optimizer has (0.9, 0.999)")):
        edited = {**state, "optimizer": {**state["optimizer"], "param_groups": [
            {**state["optimizer"]["param_groups"][0], key: value}]}}
        torch.save(edited, run / "train_state.pt")
        assert one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume").startswith(
            f"{run / 'train_state.pt'}: optimizer.param_groups[0].{said}")
    torch.save({k: v for k, v in state.items() if k != "config"}, run / "train_state.pt")
    with caplog.at_level("WARNING"):
        assert main(["--quiet", "train", "--out", str(run), "--epochs", "2", "--resume"]) == 0
    assert f"{run / 'train_state.pt'} records no config (a state of vaekit before 0.4, or one edited)" in caplog.text
    (tmp_path / "semi.csv").write_text("a;b\n" + "".join(f"{i / 7};{i / 3}\n" for i in range(30)))
    (tmp_path / "vs.csv").write_text("ab,a\ufe0fb\n" + "1,2\n3,4\n" * 15, encoding="utf-8")
    for name, said in (("semi.csv", "the header is one column holding ';'; vaekit reads comma-separated tables"),
                       ("vs.csv", f"column 2 of the header, {'a' + chr(0xFE0F) + 'b'!r}, holds a control character")):
        with pytest.raises(vaekit.VaekitError) as e:
            vaekit.read_table(tmp_path / name)
        assert said in str(e.value)
    from PIL import Image
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray((rng.random((6, 6)) * 255).astype("uint8")).save(tmp_path / "imgs" / f"{i}.png")
    assert main(["--quiet", "train", "--dataset", str(tmp_path / "imgs"), "--likelihood", "gaussian", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "8", "--out", str(tmp_path / "RI")]) == 0
    for argv in (["sample", tmp_path / "RI", "--n", 4, "--out", tmp_path / "imgs" / "s.png"],
                 ["encode", tmp_path / "RI", "--out", tmp_path / "imgs" / "sub" / "codes.npy"]):
        assert "which this command reads; write elsewhere" in one_line(capsys, *argv)
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == sorted(f"{i}.png" for i in range(20))


def test_an_npz_whose_array_header_claims_more_than_its_member_holds_says_so(tmp_path, capsys):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**13,)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.writestr("x.npy", header.getvalue() + bytes(64))
    assert one_line(capsys, "train", "--dataset", tmp_path / "huge.npz", "--likelihood", "gaussian", "--out",
                    tmp_path / "r") == (
        f"{tmp_path / 'huge.npz'} [x]: its header claims an array of shape (10000000000000,) (40,000,000,000,000 "
        "bytes), but the member holds 64 bytes after it; the file is cut short or damaged")
