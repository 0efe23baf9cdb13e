"""The fifth held-out attack's faults (issue 27), each made for real: a pandas CSV, a decode of more rows than fit,
a temperature that overflows a deeper model, a crafted column standardization, a placeholder for a missing number,
an impute of millions of draws. Each is one line (or a warning) now, with the values checked."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

import vaekit
from vaekit.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("attack5") / "run"
    assert main(["--quiet", "train", "--dataset", "digits", "--out", str(out), "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "16"]) == 0
    return out


def one_line(capsys, *argv):
    code = main(["--quiet", *map(str, argv)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("vaekit: error: "), (code, err)
    return err[0].removeprefix("vaekit: error: ")


def test_latents_written_by_pandas_decode_as_from_npy(trained, tmp_path, capsys):
    """pandas' to_csv(index=False) writes the header 0,1: it was decoded as a latent, shifting every row by one."""
    z = np.array([[0.5, -0.5], [1.0, 2.0], [-1.0, 0.3]], np.float32)
    np.save(tmp_path / "z.npy", z)
    pd.DataFrame(z).to_csv(tmp_path / "z.csv", index=False)
    assert (tmp_path / "z.csv").read_text().splitlines()[0] == "0,1"
    for name in ("z.npy", "z.csv"):
        assert main(["--quiet", "decode", str(trained), "--latents", str(tmp_path / name),
                     "--out", str(tmp_path / f"{name}.out.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "z.npy.out.npy"), np.load(tmp_path / "z.csv.out.npy"))
    (tmp_path / "u.csv").write_text("z1,z2\n0.5,-0.5\n1_0,2\n")  # Python's float reads 1_0 as 10
    assert "u.csv: cannot read latents" in one_line(capsys, "decode", trained, "--latents", tmp_path / "u.csv",
                                                    "--out", tmp_path / "u.npy")


def test_data_written_by_pandas_has_no_example_of_its_header(tmp_path):
    x = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    pd.DataFrame(x).to_csv(tmp_path / "x.csv", index=False)
    data = vaekit.load_dataset(str(tmp_path / "x.csv"), support="real")
    rows = torch.cat([data.split(s) for s in ("train", "val", "test")])
    assert rows.shape[0] == 100
    assert {tuple(r) for r in rows.numpy().round(5).tolist()} == {tuple(r) for r in x.round(5).tolist()}
    np.savetxt(tmp_path / "y.csv", np.vstack([[0, 1, 2], x]), delimiter=",")  # a first row of data 0, 1, 2 as floats
    assert vaekit.load_dataset(str(tmp_path / "y.csv"), support="real").split("train").shape[0] + \
        vaekit.load_dataset(str(tmp_path / "y.csv"), support="real").split("val").shape[0] + \
        vaekit.load_dataset(str(tmp_path / "y.csv"), support="real").split("test").shape[0] == 101


def test_decode_refuses_more_rows_than_it_writes_at_once(trained, tmp_path, capsys, monkeypatch):
    """A 160 MB .npy of 20,000,000 latents (or a 155 kB .npz) made decode hold 2.6 GB before failing."""
    from vaekit.cli import outputs

    monkeypatch.setattr(outputs, "MAX_DECODED_BYTES", 64 * 4 * 1000)  # 1000 rows of digits' 64 values
    np.save(tmp_path / "z.npy", np.zeros((1001, 2), np.float32))
    said = one_line(capsys, "decode", trained, "--latents", tmp_path / "z.npy", "--out", tmp_path / "x.npy")
    assert said == (f"{tmp_path / 'z.npy'}: 1,001 latents decode to 0.0 GB of 64 values each, more than vaekit writes "
                    "at once (0.0 GB); decode at most 1,000 rows a file")
    np.save(tmp_path / "z.npy", np.zeros((1000, 2), np.float32))
    assert main(["--quiet", "decode", str(trained), "--latents", str(tmp_path / "z.npy"), "--out",
                 str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (1000, 1, 8, 8)


def test_an_overflow_at_a_temperature_blames_the_temperature_not_the_weights(tmp_path, capsys):
    run = tmp_path / "two"
    assert main(["--quiet", "train", "--dataset", "digits", "--epochs", "1", "--hidden", "16", "--latent-dim", "2",
                 "--latent-dim", "2", "--out", str(run)]) == 0
    said = one_line(capsys, "sample", run, "--n", "3", "--temperature", "999", "--out", tmp_path / "b.npy")
    assert said.startswith("the model's distributions overflow at --temperature 999 (Expected parameter ")
    assert said.endswith("); use a smaller one") and said.count("(") == said.count(")")
    assert main(["--quiet", "sample", str(run), "--n", "3", "--temperature", "2", "--out", str(tmp_path / "a.npy")]) == 0


def table_run(tmp_path):
    rng = np.random.default_rng(0)
    rows = "".join(f"{rng.normal():.3f},{rng.choice(list('abc'))}\n" for _ in range(200))
    (tmp_path / "t.csv").write_text("x,c\n" + rows)
    run = tmp_path / "tab"
    assert main(["--quiet", "train", "--dataset", str(tmp_path / "t.csv"), "--likelihood", "mixed", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "16", "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize("field, value", [("spread", 1e-300), ("shift", 1e308), ("spread", 1e300)])
def test_a_column_standardization_no_float32_data_give_is_refused_naming_it(tmp_path, capsys, field, value):
    run = table_run(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["columns"][0][field] = value
    (run / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "q.csv").write_text("x,c\n,a\n0.1,\n")
    said = one_line(capsys, "impute", run, "--data", tmp_path / "q.csv", "--out", tmp_path / "i.csv", "--k", "5")
    assert "(x): shift must be a number in ±1e+18 and spread one in [1e-12, 1e+18]" in said and repr(value) in said


def test_impute_bounds_its_draws_and_its_advice_names_its_own_flags(tmp_path, capsys, monkeypatch):
    run = table_run(tmp_path)
    (tmp_path / "q.csv").write_text("x,c\n,a\n0.1,\n")
    said = one_line(capsys, "impute", run, "--data", tmp_path / "q.csv", "--out", tmp_path / "i.csv",
                    "--draws", "6000000", "--k", "10")
    assert said == ("--draws 6,000,000: 6,000,000 completed tables of 4 cells exceed 20,000,000 cells, the most vaekit "
                    "reads or writes in a table")
    from vaekit.cli import tables

    def boom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(tables, "impute", boom)
    said = one_line(capsys, "impute", run, "--data", tmp_path / "q.csv", "--out", tmp_path / "i.csv")
    assert said == "out of memory (MemoryError); ask for less: a smaller --k or --draws"


@pytest.mark.parametrize("placeholder", ["#N/A", "<NA>", "-nan"])
def test_pandas_placeholders_for_a_missing_number_are_missing(tmp_path, placeholder):
    from vaekit.data.table_files import read_table

    rows = [f"{18 + i % 60 if i % 10 else placeholder},{'ab'[i % 2]}" for i in range(300)]
    (tmp_path / "t.csv").write_text("age,c\n" + "\n".join(rows) + "\n")
    table = read_table(tmp_path / "t.csv")
    assert table.schema.columns[0].kind in ("real", "count") and int(table.codes[:, 0].isnan().sum()) == 30


def test_a_number_column_but_for_one_word_says_so(tmp_path, caplog):
    from vaekit.data.table_files import read_table

    rows = [f"{'-' if i % 10 == 0 else 18 + i % 60},{'ab'[i % 2]}" for i in range(300)]
    (tmp_path / "t.csv").write_text("age,c\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        table = read_table(tmp_path / "t.csv")
    assert table.schema.columns[0].kind == "categorical"
    levels = len(table.schema.columns[0].levels)
    assert levels == 1 + len({18 + i % 60 for i in range(300) if i % 10})
    said = (f"column 'age': numbers except for '-' (30 cells), so it is read as {levels} levels; leave a missing value's "
            "cell empty and write a number as digits (or give --column-type age=categorical)")
    assert [r.getMessage() for r in caplog.records] == [said]


def test_a_repeated_metrics_line_is_kept_once_by_a_resume(tmp_path):
    flags = ["--quiet", "train", "--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--seed", "3"]
    assert main([*flags, "--epochs", "3", "--out", str(tmp_path / "straight")]) == 0
    assert main([*flags, "--epochs", "2", "--out", str(tmp_path / "r")]) == 0
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "r" / "metrics.jsonl").write_text("".join([lines[0], lines[0], lines[1]]))
    assert main([*flags, "--epochs", "3", "--out", str(tmp_path / "r"), "--resume"]) == 0

    def untimed(run):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert untimed(tmp_path / "r") == untimed(tmp_path / "straight") and len(untimed(tmp_path / "r")) == 3


def test_save_refuses_weights_that_load_would_refuse(tmp_path, capsys):
    model = vaekit.VAE(data_dim=4, latent_dim=2, hidden=(8,))
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(vaekit.VaekitError, match=r"^vaekit.save: the model's weights hold NaN or Inf \(in .*\); nothing"):
        vaekit.save(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_an_empty_init_from_is_refused_not_a_default_model(tmp_path, capsys):
    said = one_line(capsys, "train", "--init-from", "", "--epochs", "1", "--out", tmp_path / "ft")
    assert said == "--init-from is empty; name the run directory to start from (or leave it out)"
    assert not (tmp_path / "ft").exists()


def test_a_picture_holds_at_most_its_cap_of_images(trained, tmp_path, capsys, monkeypatch, caplog):
    """decode --out X.png of 400,000 latents (a 3.2 MB file) took 5 GB to draw (sixth attack): refused; sample draws
    the first ones into the picture and keeps every sample in the array."""
    from vaekit.cli import outputs

    monkeypatch.setattr(outputs, "MAX_GRID_IMAGES", 10)
    np.save(tmp_path / "z.npy", np.zeros((11, 2), np.float32))
    said = one_line(capsys, "decode", trained, "--latents", tmp_path / "z.npy", "--out", tmp_path / "x.png")
    assert said == (f"{tmp_path / 'z.npy'}: 11 latents are more than a picture shows (10); decode them into a .npy, "
                    "or fewer into the .png")
    with caplog.at_level(logging.INFO):
        assert main(["sample", str(trained), "--n", "12", "--out", str(tmp_path / "s.png")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (12, 1, 8, 8) and (tmp_path / "s.png").stat().st_size > 0
    assert f"{tmp_path / 's.png'} shows the first 10 of the 12 samples (all are in {tmp_path / 's.npy'})" in caplog.text


def test_a_one_column_pandas_header_is_a_header_and_binary_data_starting_0_1_are_data(trained, tmp_path, caplog):
    """A one-column pandas CSV (header `0`) still gained a fake row; 2-column binary data whose first row is 0,1 lost
    it silently to the header rule (sixth attack)."""
    x = np.random.default_rng(1).normal(size=(50, 1)).astype(np.float32)
    pd.DataFrame(x).to_csv(tmp_path / "one.csv", index=False)
    data = vaekit.load_dataset(str(tmp_path / "one.csv"), support="real")
    assert sum(data.split(s).shape[0] for s in ("train", "val", "test")) == 50
    rows = np.array([[0, 1]] + [[i % 2, (i // 2) % 2] for i in range(49)])
    np.savetxt(tmp_path / "bin.csv", rows, fmt="%d", delimiter=",")
    with caplog.at_level(logging.WARNING):
        data = vaekit.load_dataset(str(tmp_path / "bin.csv"), support="binary")
    assert sum(data.split(s).shape[0] for s in ("train", "val", "test")) == 50
    assert "bin.csv: the first row 0,1 is read as data; if it is pandas' column names" in caplog.text


@pytest.mark.parametrize("cell", ["inf", "-Infinity", "1e400"])
def test_a_number_column_with_an_infinite_cell_is_refused_not_read_as_levels(tmp_path, cell):
    from vaekit.data.table_files import read_table

    rows = [f"{cell if i == 7 else 0.5 * i},{'ab'[i % 2]}" for i in range(40)]
    (tmp_path / "t.csv").write_text("x,c\n" + "\n".join(rows) + "\n")
    with pytest.raises(vaekit.VaekitError, match=rf"column 'x': '{cell}' is not a finite number; leave the cell empty"):
        read_table(tmp_path / "t.csv")


def test_a_parquet_column_of_dates_is_one_line(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import datetime

    from vaekit.data.table_files import read_table

    pq.write_table(pa.table({"x": [0.5, 1.5, 2.5], "d": [datetime.date(2020, 1, i + 1) for i in range(3)]}),
                   tmp_path / "t.parquet")
    with pytest.raises(vaekit.VaekitError, match=r"t.parquet: column 'd' is of type date32\[day\]; vaekit reads"):
        read_table(tmp_path / "t.parquet")
