"""One way to write a file: atomically, with the umask's permissions, checked and cleaned up on failure.

Every output of mixflow (the ``.nc`` container, CSV tables, the HTML report, PNG figures, ``workflow.json``)
goes through :func:`atomic_write`: the content is written to a hidden temporary in the destination's
directory, flushed to disk, verified, given the permissions a plain ``open`` would give (``0o666`` less the
umask), then renamed onto the destination. So the destination holds either the previous file or the
complete new one; a failure (full disk, interrupt, SIGTERM) removes the temporary and keeps the old file.
"""

import contextlib
import contextvars
import errno
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from pathlib import Path

from mixflow.errors import TERMINATING_SIGNALS

__all__ = ["atomic_write", "check_free_space", "file_mode", "interrupts_deferred", "recording", "written_through"]

#: Where :func:`atomic_write` records the files it completes (see :func:`recording`), or None
_record: contextvars.ContextVar = contextvars.ContextVar("mixflow_completed_files", default=None)
_HEADROOM = 1.25  # estimated size x this, plus _SLACK bytes, must be free before writing
_SLACK = 1 << 20


def file_mode() -> int:
    """The permissions of a new file under the current umask (``0o666 & ~umask``)."""
    try:
        with open("/proc/self/status") as status:  # reading the umask without changing it (Linux >= 4.7)
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def check_free_space(path, needed_bytes: int) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``path`` unless its directory has room for about ``needed_bytes``."""
    path = Path(path)
    free = shutil.disk_usage(path.parent).free
    wanted = int(needed_bytes * _HEADROOM) + _SLACK
    if free < wanted:
        raise OSError(errno.ENOSPC, f"not enough free space to write it (about {wanted / 1e6:.1f} MB needed, "
                      f"{free / 1e6:.1f} MB free); free some space or choose another output directory", str(path))


def atomic_write(path, write, *, expected_bytes: int | None = None, verify=None) -> Path:
    """Call ``write(temporary_path)``, check the result, then rename it onto ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The destination; its directory must exist. An existing file is replaced only by a complete new one.
    write : callable
        Writes the content to the path it is given (a hidden temporary next to ``path``).
    expected_bytes : int, optional
        Estimated size: the write is refused (``OSError`` ENOSPC) unless the disk has room for it.
    verify : callable, optional
        Called with the temporary path after writing; raises (or returns False) if the file is unusable.

    Returns
    -------
    pathlib.Path
        The path given (a symbolic link's target is written, the link returned).
    """
    given = path = Path(path)
    if path.is_symlink():  # the link's target is written, as open() would, and the link kept
        path = Path(os.path.realpath(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such directory to write into", str(path.parent))
    _check_replaceable(path)
    with _termination_raises():
        temporary = None
        try:
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(handle)
            if expected_bytes is not None:
                check_free_space(path, expected_bytes)
            write(Path(temporary))
            _flush(temporary)
            if os.path.getsize(temporary) == 0 or (verify is not None and verify(Path(temporary)) is False):
                raise OSError(errno.EIO, "the file written is empty or unreadable (is the disk full?)", str(path))
            os.chmod(temporary, file_mode())
            with interrupts_deferred():  # the file in place is the file recorded, whenever an interrupt comes
                os.replace(temporary, path)
                _note_completed(given, path)
        except OSError as error:
            _remove(temporary)
            if error.errno is not None and (error.filename is None or _is_temporary(error.filename, path)):
                raise type(error)(error.errno, error.strerror, str(path)) from error  # name the file, not its temporary
            raise
        except BaseException:
            _remove(temporary)
            raise
    return given


_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


def _check_replaceable(path: Path) -> None:
    """Raise ``OSError`` unless ``path`` is absent or a regular file: the rename would put a file in its place."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
    code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
    raise OSError(code, f"it is {kind}, not a file: mixflow writes a new file in place of a regular file only; "
                        "choose a file name", str(path))


def written_through(name: str) -> str | None:
    """The name of the file whose :func:`atomic_write` a temporary file called ``name`` is, or None if it is none.

    ``tempfile.mkstemp``'s names: ``.<name>.<8 random characters>.tmp``.
    """
    temporary = re.fullmatch(r"\.(.+)\.[a-z0-9_]{8}\.tmp", name)
    return None if temporary is None else temporary.group(1)


def _is_temporary(name, path: Path) -> bool:
    name = Path(os.fsdecode(name))  # mkstemp names its file by an absolute path
    return (os.path.abspath(name.parent) == os.path.abspath(path.parent) and name.name.startswith(f".{path.name}.")
            and name.suffix == ".tmp")


def _remove(temporary: str | None) -> None:
    if temporary is not None:
        Path(temporary).unlink(missing_ok=True)


def _flush(temporary: str) -> None:
    descriptor = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _note_completed(given: Path, path: Path) -> None:
    """Append ``given`` to the list of the enclosing :func:`recording`, if any and if the file is under its root.

    Then call the recording's ``then``, outside any recording (the file it may write is not the block's).
    """
    record = _record.get()
    if record is not None and (record[1] is None or Path(path).resolve().is_relative_to(record[1])):
        record[0].append(given)
        if record[2] is not None:
            token = _record.set(None)
            try:
                record[2]()
            finally:
                _record.reset(token)


@contextlib.contextmanager
def recording(completed: list, within=None, then=None):
    """Within the block, each file :func:`atomic_write` renames into place is appended to ``completed`` at once.

    Only files under the directory ``within``, if given (a run's outputs, not a cache it writes elsewhere).
    ``then``, if given, is called after each (a record of the files that must be current should the process be
    killed with no chance to write it).

    A caller that lists the files it wrote (to say which are kept after a failure or an interrupt) learns of a
    file as it replaces the old one: appending the path :func:`atomic_write` returns would miss a file whose
    rename an interrupt followed (one held back while a container was written is delivered after it).
    """
    token = _record.set((completed, None if within is None else Path(within).resolve(), then))
    try:
        yield completed
    finally:
        _record.reset(token)


@contextlib.contextmanager
def interrupts_deferred():
    """SIGINT (and SIGTERM, SIGHUP where a handler raises for it) during the block is held, and delivered when it ends.

    For work in HDF5 (writing or reading a container): a KeyboardInterrupt raised inside its callbacks or
    destructors is swallowed ("Exception ignored in ..."), and the interrupt lost, the program going on as if
    none had come. The block is short (one file's bytes), so the interrupt waits little. Each signal is
    delivered to the handler it would have met.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = [number for number in (signal.SIGINT, *TERMINATING_SIGNALS) if callable(signal.getsignal(number))]
    previous, caught = {number: signal.getsignal(number) for number in held}, []
    for number in held:
        signal.signal(number, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for number in held:
            signal.signal(number, previous[number])
        if caught:  # one is delivered (its handler raises): a termination (the first) before an interrupt
            signal.raise_signal(next((number for number in caught if number != signal.SIGINT), signal.SIGINT))


class _Terminated(SystemExit):
    """SIGTERM or SIGHUP turned into an exception, so the temporary is removed before the process ends."""


@contextlib.contextmanager
def _termination_raises():
    """While writing, SIGTERM or SIGHUP (which would end the process at once) raises: status 128 plus its number."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raising = [number for number in TERMINATING_SIGNALS if signal.getsignal(number) is signal.SIG_DFL]

    def terminate(signum, frame):
        raise _Terminated(128 + signum)

    for number in raising:
        signal.signal(number, terminate)
    try:
        yield
    finally:
        for number in raising:
            signal.signal(number, signal.SIG_DFL)
