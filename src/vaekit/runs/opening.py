"""Opening a run directory: its data found where they lie now (`point_data`), the checks before anything is trained
(`open_run`), its lock, and the files a run lost that another of its files gives back (config.json from the config
train_state.pt records)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from ..data import DATASETS, IN_MEMORY, folder_files
from ..errors import VaekitError
from ..files import missing
from ..training.distributed import SINGLE, Context, from_env
from . import checkpoint as ckpt
from .config import Config, resume_config
from .history import METRICS
from .state_check import check_config, config_record
from .weights_kept import weights_epoch

log = logging.getLogger(__name__)


def absolute_paths(d) -> dict[str, str]:
    """The data paths of a [data] section made absolute, so that config.json works from any folder
    (a named dataset stays a name; the data root, when given, becomes absolute too). Links are kept as given, not
    followed: a run records the path its user named (a file that became a link stays the same path)."""
    paths = {}
    if d.dataset not in DATASETS and d.dataset != IN_MEMORY:
        paths["dataset"] = str(Path(d.dataset).expanduser().absolute())
    if d.data_dir is not None:
        paths["data_dir"] = str(Path(d.data_dir).expanduser().absolute())
    return paths


def data_digest(dataset: str) -> str:
    """The sha256 of a data file (of a folder of images: of its files' names and bytes, in order) a run trains on;
    "" for a named dataset (its files are verified by MD5) or data given to vaekit.fit (`fit.digest` records those)."""
    return digest_and_size(dataset)[0]


def digest_and_size(dataset: str) -> tuple[str, int | None]:
    """`data_digest` and the bytes it read (`data_size`), from the same open files: a file written to while it is
    hashed is refused, not recorded as a sha256 and a size no file can match. ("", None) where `data_digest` is ""."""
    if dataset in DATASETS or dataset == IN_MEMORY:
        return "", None
    path = Path(dataset)
    if not path.is_dir() and not path.is_file():  # missing, a FIFO, a device: the data's reader says so in one line
        return "", None
    h, size = hashlib.sha256(), 0
    try:
        for f in sorted(folder_files(path)) if path.is_dir() else [path]:
            h.update(f"{f.relative_to(path) if f != path else ''}\0".encode())
            with open(f, "rb") as stream:
                before = os.fstat(stream.fileno())
                h.update(hashlib.file_digest(stream, "sha256").digest())
                after = os.fstat(stream.fileno())
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                raise VaekitError(f"{f}: written to while vaekit read it; try again once nothing writes to it")
            size += after.st_size
    except OSError as e:
        raise VaekitError(f"{dataset}: cannot read it ({e.strerror or e})") from None
    return h.hexdigest(), size


def data_size(path: Path, beyond: int | None = None) -> int:
    """The bytes `data_digest` reads: a file's size, the sum of a folder's files' sizes (-1: neither a file nor a
    folder); with `beyond`, a folder's files are summed no further than past it (a wrong folder is not walked whole)."""
    if not path.is_dir():
        return path.stat().st_size if path.is_file() else -1
    total = 0
    for f in folder_files(path):
        total += f.stat().st_size
        if beyond is not None and total > beyond:
            break
    return total


def with_data_digest(cfg: Config) -> Config:
    """A fresh run's config with the digest of its data file and its size (once the data's reader took the file)."""
    if cfg.data.dataset == IN_MEMORY:
        return cfg
    digest, size = digest_and_size(cfg.data.dataset)
    return replace(cfg, data=replace(cfg.data, digest=digest, size=size))


def same_source(d, there: str) -> bool:
    """Whether the data at `there` are the run's own ([data] `d`): the bytes it recorded (at its path, or a copy), or
    its path where it recorded none (a named dataset, a run of before digests). Bytes are hashed only where they may
    be the same: data of another size than the run recorded (or, for a run that recorded none, than its file still
    there has) are another source, or the run's changed, told without reading them."""
    if not d.digest or there in DATASETS or there == IN_MEMORY:
        return same_path(there, d.dataset)
    mine, given = Path(d.dataset), Path(there)
    try:
        if d.size is not None and data_size(given, beyond=d.size) != d.size:
            return False
        if d.size is None and not same_path(there, d.dataset):  # a run of before sizes: its file's, where it is there
            if not mine.exists():  # nothing to compare with: another source, not hashed whole on a guess
                return False
            if _layout(given, _layout(mine)) != _layout(mine):
                return False
    except OSError:  # a file or folder not to be read: not the run's, whose reader says why
        return False
    return data_digest(there) == d.digest


def same_path(a: str, b: str) -> bool:
    """Whether two spellings name one file (`./../d/f`, a link to it), or are the same string where either is gone."""
    try:
        return a == b or os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _layout(path: Path, like: list | None = None) -> list:
    """A file's size, or a folder's files (those `data_digest` reads) with their sizes, in order; with `like`, read
    no further than one entry past its length (a wrong folder of a million files is not walked)."""
    if not path.is_dir():
        return [path.stat().st_size] if path.is_file() else []
    layout = []
    for f in folder_files(path):
        layout.append((str(f.relative_to(path)), f.stat().st_size))
        if like is not None and len(layout) > len(like):
            break
    return sorted(layout)


def data_changed(cfg: Config) -> str | None:
    """How the run's data file (or folder) differs from the bytes its config.json records a sha256 (and a size) of;
    None where it does not, or where nothing is recorded (a named dataset, data given in Python, a run written before
    digests). Another size is told without reading the data."""
    d = cfg.data
    if d.dataset == IN_MEMORY or not d.digest or not Path(d.dataset).exists() or same_source(d, d.dataset):
        return None  # a file not there: its reader says so
    try:
        resized = d.size is not None and data_size(Path(d.dataset), beyond=d.size) != d.size
    except OSError:  # a folder not to be listed: its reader says why
        resized = False
    if resized:
        return f"{'their' if Path(d.dataset).is_dir() else 'its'} size is not the {d.size:,} bytes {ckpt.CONFIG} records"
    if Path(d.dataset).is_dir():
        return "a file in this folder was added, removed, renamed or changed since the run recorded their sha256"
    return f"its sha256 differs from the one {ckpt.CONFIG} records"


def point_data(cfg: Config, dataset: str | None = None, data_dir: str | None = None, warn: bool = True,
               flag: str | None = "--dataset") -> Config:
    """A run's config pointed at its data where it lies now: `data_dir`, else $VAEKIT_DATA, else the
    run's own; `dataset` replaces the dataset (load_data checks it against the model's shape). The run's own file (by
    any spelling) whose bytes changed since training is warned about (`warn`; once, by the main process), before
    any number of a command that reads it: its splits hold other rows now. Data that are not the run's own bytes
    (`same_source`: another file, or the run's file changed since) are split as the source splits by default, not by
    the run's val_size, a count that fits the run's rows and may exceed another file's; memory-mapped (the run's
    --mmap) only where they are a .npy. The run's own file gone, and no other named: said, with `flag`, the
    caller's way to name where they lie now (None: it has none)."""
    d = replace(cfg.data, data_dir=data_dir or os.environ.get("VAEKIT_DATA") or cfg.data.data_dir,
                dataset=dataset or cfg.data.dataset)
    d = replace(d, **absolute_paths(d))
    if not dataset and d.digest and d.dataset != IN_MEMORY and not Path(d.dataset).exists() and not Path(d.dataset).is_symlink():
        raise VaekitError(f"{d.dataset}: the run's data are gone (moved or removed); put them back there"
                          + (f", or name where they lie now with {flag}" if flag else ""))
    own = None
    if warn and same_path(d.dataset, cfg.data.dataset):  # the run's file, named or not: its bytes hashed once here
        line = changed_line(cfg, d.dataset)
        own = line is None
        if line and (from_env() or SINGLE).is_main:
            log.warning("%s: what follows is of the data as they are now, not of the rows the run was trained and "
                        "validated on", line)
    if (d.val_size is not None or d.mmap) and not (own if own is not None else same_source(cfg.data, d.dataset)):
        if d.val_size is not None:  # another source: read as such
            log.info("%s: %s; its validation split is its own default, not the run's val_size %d", d.dataset,
                     "changed since the run was trained" if own is not None else "not the run's data", d.val_size)
        d = replace(d, val_size=None, mmap=d.mmap and Path(d.dataset).suffix == ".npy")  # only a .npy maps
    return replace(cfg, data=d)


def changed_line(cfg: Config, dataset: str) -> str | None:
    """Where `dataset` is the run's own data file by any spelling (the run's config `cfg`) and its bytes changed since
    training (`data_changed`): the line that says so; else None."""
    if not same_path(dataset, cfg.data.dataset):
        return None
    changed = data_changed(cfg)
    return f"{dataset}, the run's data, changed since it was trained ({changed})" if changed else None


def _untrained(out: Path) -> str:
    """Where `out` holds a config.json and no checkpoint (a run stopped, or refused, before its first): how to train
    another run there, which nothing trained stands in the way of."""
    if any((out / name).exists() or (out / name).is_symlink() for name in (ckpt.STATE, ckpt.WEIGHTS)):
        return ""
    return f" ({out} holds no checkpoint, only the {ckpt.CONFIG} of a run stopped before its first: remove that " \
           "file to train another run there)"


def check_same_data(cfg: Config) -> Config:
    """A resume is refused on a data file whose bytes changed since the run recorded them (it would train on other
    data, and a lost standardization would be computed from them): checked before anything reads the file. The
    config, with the data's size where the run recorded only their sha256 (a run of before sizes gains the cheap
    check from now on)."""
    changed = data_changed(cfg)
    if changed:
        raise VaekitError(f"{cfg.data.dataset}: not the data this run was trained on ({changed}); restore "
                          f"{'them' if Path(cfg.data.dataset).is_dir() else 'that file'}, or train a new run into "
                          "another --out")
    d = cfg.data
    if d.digest and d.size is None and d.dataset != IN_MEMORY and Path(d.dataset).exists():
        return replace(cfg, data=replace(d, size=data_size(Path(d.dataset))))
    return cfg


def open_run(cfg: Config, out: str | Path | None, resume: bool, ctx: Context = SINGLE,
             given: Collection[tuple[str, str]] | None = None,
             words: tuple[str, str] = ("--resume", "--out")) -> tuple[Path | None, bool, Config]:
    """Check the run directory before anything is trained: (out, resume, the config to train).

    A resumed run trains with its saved config; of the settings in `given` (see
    `config.resume_config`), those that may change (epochs, lr, checkpoint cadence, …) override it
    and are written back to config.json, and a different model, data or batch size is refused. A run killed before its
    first checkpoint (a config.json and nothing else to continue from) starts again from step 0
    with its saved config, under `--resume` and under torchrun's elastic restart alike. `words`: how the
    caller says resume and out (`vaekit.fit`'s errors name its keywords, not the CLI's flags)."""
    resume_word, out_word = words
    out = Path(out) if out is not None else None
    again = f", or remove the link (a resumed run writes it again from {ckpt.STATE})"
    remedies = {ckpt.CONFIG: again, ckpt.WEIGHTS: again, METRICS: " (the epochs' lines), or remove the link (the run "
                "goes on without them)", ckpt.STATE: f" (what resuming needs), or train into another {out_word}"}
    for name, remedy in remedies.items() if out is not None else ():
        if (out / name).is_symlink() and not (out / name).exists():  # neither missing (a run to start again) nor there
            raise VaekitError(f"{out / name}: {missing(out / name)}; restore what it points to{remedy}")
    data = Path(cfg.data.dataset) if cfg.data.dataset not in DATASETS and cfg.data.dataset != IN_MEMORY else None
    if out is not None and data is not None and data.is_dir() and out.resolve().is_relative_to(data.resolve()):
        raise VaekitError(f"{out_word} {out}: lies in {data}, a folder of images training reads (the run's files would "
                          "become its examples); write the run elsewhere")
    if ctx.distributed and out is not None and (out / ckpt.CONFIG).exists():
        resume = True  # an elastic restart continues where the job stopped
    if not resume:
        if out is not None and (out / ckpt.CONFIG).exists():
            raise VaekitError(f"{out}: already holds a run; pass {resume_word} to continue it or choose another "
                              f"{out_word}{_untrained(out)}")
        kept = [name for name in (ckpt.STATE, ckpt.WEIGHTS) if out is not None and (out / name).exists()]
        if kept:  # a run that lost its config.json: a fresh run would overwrite its checkpoint
            again = f"pass {resume_word} to continue it (its {ckpt.CONFIG} is written again from {ckpt.STATE}), or " \
                if ckpt.STATE in kept else ""
            raise VaekitError(f"{out}: holds {' and '.join(kept)} of a run whose {ckpt.CONFIG} is missing; {again}"
                              f"choose another {out_word}")
        return out, False, cfg
    if out is not None and not (out / ckpt.CONFIG).exists():
        config_from_state(out)
    if out is None or not (out / ckpt.CONFIG).exists():
        raise VaekitError(f"{out}: no checkpoint to resume from (no {ckpt.CONFIG} either); start it without "
                          f"{resume_word}")
    cfg = replace(cfg, data=replace(cfg.data, **absolute_paths(cfg.data)))  # compared as they were saved
    saved = ckpt.load_config(out)
    cfg, saved = _data_where_now(cfg, saved, given, out, resume_word)
    try:
        cfg = resume_config(saved, cfg, given, where=f"{resume_word}: ", words=words)
    except VaekitError as e:
        if (out / ckpt.STATE).exists():  # config.json edited by hand since: blame it, not the caller's settings
            check_config(ckpt.load_state(out), saved, out / ckpt.STATE, out / ckpt.CONFIG)
        raise VaekitError(f"{e}{_untrained(out)}") from None
    if (out / ckpt.STATE).exists():
        return out, True, cfg
    cfg = check_same_data(cfg)  # a start again from step 0 trains on the data the run recorded, or not at all
    epoch = weights_epoch(out) if (out / ckpt.WEIGHTS).exists() else None
    if (out / ckpt.WEIGHTS).exists() and (epoch is None or epoch > 1 or cfg.train.init_from):  # init_from: its
        # source's weights may have moved on since, so a start again would not be this run's
        why = "vaekit.save writes none" if epoch is None else f"its epoch {epoch}'s checkpoint was cut short, or the file " \
            "removed"
        raise VaekitError(f"{out}: holds weights but no {ckpt.STATE} to continue training from ({why}); move {ckpt.WEIGHTS} "
                          f"elsewhere and pass {resume_word} to train it again from step 0, or train into another "
                          f"{out_word}")
    if epoch is not None:  # the first epoch's weights, the state never written (a kill, a full disk): its one epoch
        log.warning("%s: holds the first epoch's %s without %s (a checkpoint cut short, or the file removed); "
                    "starting it again from step 0 with its config", out, ckpt.WEIGHTS, ckpt.STATE)
        return out, False, cfg
    log.warning("%s: stopped before its first checkpoint; starting it again from step 0 with its config", out)
    return out, False, cfg


def _data_where_now(cfg: Config, saved: Config, given: Collection[tuple[str, str]] | None, out: Path,
                    resume_word: str) -> tuple[Config, Config]:
    """(the config asked, the run's saved config) with the run's data where they lie now: another spelling of its
    file (a link, `./../d/f`) is its file; the bytes it recorded (size, then sha256), moved elsewhere, are its data
    at their new place, recorded there from now on. Its file gone and no other named: said, with how to go on."""
    old, new = saved.data.dataset, cfg.data.dataset
    flag = "--dataset" if resume_word.startswith("--") else "[data] dataset"  # the caller's word for it
    if old in DATASETS or old == IN_MEMORY:
        return cfg, saved
    named = ("data", "dataset") in given if given is not None else new not in DATASETS and new != IN_MEMORY
    if not named or new == old:
        if saved.data.digest and not Path(old).exists() and not Path(old).is_symlink():
            raise VaekitError(f"{out}: its data {old} are gone (moved or removed); put them back there to resume, or "
                              f"name where they lie now with {flag} (their sha256 is checked against the run's)")
        return cfg, saved
    if same_path(new, old):
        return replace(cfg, data=replace(cfg.data, dataset=old)), saved
    if saved.data.digest and same_source(saved.data, new):
        log.info("%s: the data of %s, %s %s (the same bytes: its sha256); recorded there from now on", new, out,
                 "a copy of" if Path(old).exists() else "moved from", old)
        return cfg, replace(saved, data=replace(saved.data, dataset=new))
    if saved.data.size is not None and not Path(old).exists() and Path(new).exists():  # other bytes named, told by
        # their size or sha256 (a run of before sizes is not hashed here: another file may be of any size)
        why = data_changed(replace(saved, data=replace(saved.data, dataset=new)))
        raise VaekitError(f"{new}: not the data of {out} ({why}); its data were {old}: put them back there to resume, "
                          f"or name where they lie now with {flag}")
    return cfg, saved


def writing_lock(out: Path | None, ctx: Context) -> contextlib.AbstractContextManager:
    """The run directory's lock, held by the process that writes it (rank 0); stale temporaries
    of a process that died mid-write are removed once it is held."""
    if out is None or not ctx.is_main:
        return contextlib.nullcontext()
    return ckpt.writing(out)




def config_from_state(out: Path) -> None:
    """A run whose config.json is gone but whose train_state.pt records the config it was trained with: write
    config.json again from that record (a warning says so); a state without one: nothing (the caller's refusal
    stands); a damaged record: one line."""
    if (out / ckpt.CONFIG).is_symlink() or not (out / ckpt.STATE).exists():
        return
    recorded = config_record(ckpt.load_state(out), out / ckpt.STATE)
    if recorded is None:
        return
    cfg = Config.from_dict(recorded, source=f"{out / ckpt.STATE} [config]")
    ckpt.save_config(out, cfg)
    log.warning("%s: missing; written again from the config %s records", out / ckpt.CONFIG, ckpt.STATE)
