"""Writing files safely: whole files by rename, whole lines by one append, one writer per run directory.

Every file vaekit writes goes through `atomic_write` (a temporary file in the same directory,
fsync, `os.replace`), so a crash leaves the old file or the new one, never half of one; a log line
through `append_line`, which either adds the whole line or leaves the file as it was. An `OSError`
on the way (a full disk, a read-only file system, no permission, a path that is a file, a name too
long) becomes one `VaekitError` line naming the file and what to do. `RunLock` keeps a second
process from training into a run directory that one is already writing.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VaekitError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, so no protection against two writers
    fcntl = None  # type: ignore[assignment]

_UMASK = os.umask(0)
os.umask(_UMASK)
LOCK = ".vaekit.lock"

_ADVICE = {
    errno.ENOSPC: "the disk is full: free space, then run the command again (a training run: with --resume)",
    errno.EDQUOT: "the disk quota is exhausted: free space, then run the command again (a training run: with --resume)",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.EACCES: "permission denied: choose another --out or fix its permissions",
    errno.EPERM: "permission denied: choose another --out or fix its permissions",
    errno.ENAMETOOLONG: "the name is too long for the file system: choose a shorter path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EEXIST: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "the path is a folder: name a file",
    errno.ELOOP: "it is a symbolic link, and vaekit writes no file of a run through a link: remove the link",
}
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # open the file itself, never where a symbolic link points
MAX_TEXT_BYTES = 64 << 20  # a config.json or a settings file: far beyond any real one
MAX_METRICS_BYTES = 256 << 20  # metrics.jsonl: a line per epoch, ~1 KB each (`history.MAX_RECORDS` lines at most)


def write_error(path: Path, e: OSError) -> VaekitError:
    """The one line for an OSError met while writing `path`."""
    reason = _ADVICE.get(e.errno, f"{e.strerror or e}")
    return VaekitError(f"{path}: cannot write ({reason})")


def make_dirs(path: Path) -> None:
    """`path.mkdir(parents=True, exist_ok=True)`, with a failure said in one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        if path.is_symlink() and not path.exists():
            raise VaekitError(f"{path}: is a symbolic link to {os.readlink(path)}, which does not exist: make that folder, "
                              "or choose another path") from None
        mode = path.lstat().st_mode
        what = "a file" if stat.S_ISREG(mode) else kind_of(mode)
        raise VaekitError(f"{path}: is {what}, not a folder; choose another path") from None
    except OSError as e:
        raise write_error(path, e) from None


def own_folder(path: Path) -> Path:
    """A folder inside a run that vaekit writes into: made if missing; a symbolic link there is refused (a run
    directory may come from someone else, and nothing is written through a link in it)."""
    if path.is_symlink():
        raise VaekitError(f"{path}: is a symbolic link, and vaekit writes nothing of a run through a link: remove it")
    make_dirs(path)
    return path


def probe_writable(folder: Path, size: int = 1 << 16) -> None:
    """Write and remove `size` bytes in `folder` (made if missing): a full disk or a read-only folder is one line
    now, before a library that writes from a thread of its own (TensorBoard) fails where no one can say so."""
    make_dirs(folder)
    probe = folder / ".vaekit-probe"
    atomic_write(probe, lambda tmp: Path(tmp).write_bytes(bytes(size)))
    probe.unlink(missing_ok=True)


def check_zip_members(source: Any, path: Path, limit: int | None = None, stored: bool = False) -> None:
    """A zip (a .npz, or torch.save's archive with `stored`: it never compresses) whose members are what they claim,
    read unread: no member that inflates beyond `limit` bytes, nor members that inflate past 256 MiB together at more
    than 100× their stored size (a zip bomb: 2 MB of zeros claim 2.4 GB; three members of 1 GiB each from 3 MB)."""
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: the reader says what it is
    for m in members:
        if stored and m.compress_type != zipfile.ZIP_STORED:
            raise VaekitError(f"{path} [{m.filename}]: compressed ({m.compress_size:,} bytes stored for "
                              f"{m.file_size:,}); torch.save stores its records as they are: not a file vaekit wrote")
        if limit is not None and m.file_size > limit:
            raise VaekitError(f"{path} [{m.filename}]: {m.file_size:,} bytes once decompressed, from {m.compress_size:,} "
                              f"stored; more than vaekit inflates (at most {limit:,})")
    inflated, packed = sum(m.file_size for m in members), sum(m.compress_size for m in members)
    if inflated > 1 << 28 and inflated > 100 * packed:
        raise VaekitError(f"{path}: its members inflate to {inflated:,} bytes from {packed:,} stored (more than 100×); "
                          "more than vaekit inflates from a small file (save it with np.savez, uncompressed)")


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) for a temporary file beside `path`, fsync, then rename it over `path`.

    A failure at any point removes the temporary file and leaves `path` as it was."""
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_array(path: Path, array) -> None:
    """A NumPy array as .npy, atomically (never pickled)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would add .npy to a name
            np.save(f, array, allow_pickle=False)

    atomic_write(path, write)


def open_regular(path: Path, flags: int) -> int:
    """os.open(path) for writing, never through a symbolic link (O_NOFOLLOW) and never a FIFO or a device:
    a file descriptor of a regular file, or one line naming it."""
    try:
        fd = os.open(path, flags | NOFOLLOW | os.O_NONBLOCK, 0o666)
    except IsADirectoryError:  # a path vaekit names itself (the lock, metrics.jsonl): not the caller's to rename
        raise VaekitError(f"{path}: not a regular file (a folder); remove it") from None
    except OSError as e:
        raise write_error(path, e) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise VaekitError(f"{path}: not a regular file ({kind_of(mode)}); remove it")
    os.set_blocking(fd, True)
    return fd


def missing(path: Path) -> str:
    """What to say of a path that opens as no file: "missing", or the symbolic link it is and where it leads
    (a link to a file that is gone, or links in a loop: not the same fault as no file, nor the same remedy)."""
    if os.path.islink(path):
        return f"a symbolic link to {os.readlink(path)}, which leads to no file (gone, or links in a loop)"
    return "missing"


def unopened(path: Path, e: OSError) -> str:
    """What to say of `path` that `e` kept from being opened: `missing()`, or why it cannot be read."""
    return missing(path) if isinstance(e, FileNotFoundError) or e.errno == errno.ELOOP else \
        f"cannot read ({e.strerror or e})"


def check_regular(path: Path, limit: int) -> None:
    """A file vaekit is about to read by path (safetensors opens it itself): a regular file (a FIFO would block, a
    device never end) of at most `limit` bytes (a sparse file claims any size), or one line naming it."""
    try:
        info = os.stat(path)
    except OSError as e:
        raise VaekitError(f"{path}: {unopened(path, e)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise VaekitError(f"{path}: not a regular file ({kind_of(info.st_mode)})")
    if info.st_size > limit:
        raise VaekitError(f"{path}: {info.st_size:,} bytes, more than the {limit:,} such a file can hold")


def physical_memory() -> float:
    """This machine's memory in bytes (inf where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return float("inf")


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, for a message."""
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device")


def read_capped(path: Path, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of the regular file `path` if it holds at most `limit`: a FIFO, a device (/dev/zero) or a
    file too large is refused in one line, never read until memory runs out. FileNotFoundError passes: not a link
    that leads to no file, which is said (a file that is there in a way, and whose history a reader must not drop)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once, to be refused below
    except OSError as e:
        if os.path.islink(path) and (isinstance(e, FileNotFoundError) or e.errno == errno.ELOOP):
            raise VaekitError(f"{path}: {missing(path)}; restore what it points to") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VaekitError(f"{path}: not a regular file ({kind_of(st.st_mode)})")
        if st.st_size > limit:
            raise VaekitError(f"{path}: {st.st_size:,} bytes, more than the {limit:,} vaekit reads of it")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # grew while read
                raise VaekitError(f"{path}: more than the {limit:,} bytes vaekit reads of it")
        return b"".join(chunks)
    finally:
        os.close(fd)


def append_line(path: Path, line: str) -> None:
    """Append `line` + newline with one write and fsync; on failure cut the file back to where it was,
    so a reader never sees half a line of ours. Never through a symbolic link, never into a FIFO."""
    data = (line.rstrip("\n") + "\n").encode()
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):  # a short write is a full disk that did not say so
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass  # the reader drops a torn last line anyway
            raise write_error(path, e) from None
    finally:
        os.close(fd)


def remove_stale_temporaries(run: Path, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files `atomic_write` leaves for `names` when a process dies mid-write.
    Call it only while holding the run's lock (another writer's temporaries are not stale)."""
    stale = [p for name in names for p in Path(run).glob(f".{name}.*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class RunLock:
    """An exclusive advisory lock on `run/.vaekit.lock`, held while a process writes the run.

    The OS releases it when the process ends, however it ends (kill -9 included), so it never
    stays stuck; a second process is refused in one line naming the holder's pid."""

    def __init__(self, run: Path, busy: str = "is training into this run; wait for it to finish or stop it, or choose "
                 "another --out"):
        self.path, self.fd, self.busy = Path(run) / LOCK, None, busy

    def __enter__(self) -> RunLock:  # noqa: PYI034 - not subclassed
        make_dirs(self.path.parent)
        if fcntl is None:
            return self
        fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)  # a link here would have us truncate its target
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise VaekitError(f"{self.path.parent}: another vaekit process (pid {holder}) {self.busy}") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as e:  # a full disk, a quota: nothing is trained into a run that cannot be written
            os.close(fd)
            raise write_error(self.path, e) from None
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):  # the pid is for a process waiting now; a finished run's lock is
                os.ftruncate(self.fd, 0)  # empty, so two runs of one seed hold the same bytes, this file included
            os.close(self.fd)  # closing releases the lock; the file stays (removing it would race)
            self.fd = None


def json_int(text: str) -> int:
    """A JSON integer (json.loads' parse_int), refused past 100 digits before Python converts it (at 4,300 its own
    limit's message names its internals, sys.set_int_max_str_digits); shorter ones are the range checks' to refuse."""
    if len(text.lstrip("-")) > 100:
        raise ValueError(f"a whole number of {len(text.lstrip('-')):,} digits")
    return int(text)


def json_loads(text: str | bytes, **kw: Any) -> Any:
    """json.loads of a file's text, each integer through `json_int`; nesting past Python's stack (a few thousand
    brackets) is a ValueError saying so, as malformed JSON is, not a RecursionError."""
    try:
        return json.loads(text, parse_int=json_int, **kw)
    except RecursionError:
        raise ValueError("nested too deeply") from None
