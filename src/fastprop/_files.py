"""Writing a file whole or not at all, as editors and databases do: the one place where
fastprop replaces files (model files, ONNX exports, pictures).

A new file is written beside its destination under a recognizable temporary name
(``.<name>.fastprop-tmp-<pid>-<16 hex>``), flushed to disk, then renamed over the destination,
so the destination is always either the old file or the whole new one. A symbolic link is
followed (its final target is replaced, the link kept); directories and special files
(FIFOs, devices, sockets) are refused with ``ValueError``. The temporary file is removed on any
exception; one left by a killed process is removed by the next save to the same name (POSIX).
"""
import errno
import os
import re
import secrets
import stat

__all__ = ["atomic_target", "atomic_write", "file_kind"]

_TMP_TAG = ".fastprop-tmp-"
_TMP_TAIL = re.compile(r"([0-9]{1,10})-[0-9a-f]{16}\Z")


def atomic_target(path, what):
    """The file a save to ``path`` replaces: ``path`` with every symlink resolved. Raises
    ValueError (naming ``what``) for an empty path, a directory or a special file."""
    return _save_target(path, what)


def atomic_write(target, write, path=None, what="file"):
    """Replace ``target`` (from :func:`atomic_target`) by the bytes ``write(f)`` writes to a
    binary file object ``f``: through a temporary file beside it, renamed once complete and on
    disk. ``path`` (the name the caller was given) and ``what`` only word the errors."""
    path = target if path is None else path
    directory, name = os.path.split(target)
    _remove_leftovers(directory, name)
    try:
        fd, tmp = _create_temp(directory, name)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"cannot save {what} to {path!r}: the directory "
                                f"{directory!r} does not exist") from None
    try:
        with os.fdopen(fd, "wb") as f:
            _set_mode(f.fileno(), target)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _save_target(path, what="model"):
    """The file ``save`` replaces: ``path`` with every symlink resolved; refuse what is not
    (or would not become) a regular file."""
    if not path:
        raise ValueError("path must not be empty")
    where = f"cannot save {what} to {path!r}"
    target = os.path.realpath(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target  # a new file (a missing directory fails when the temp file is created)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{where}: symbolic link loop") from None
        raise
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{where}: {file_kind(st.st_mode)}" + (
            f" (the link's target {target!r})" if target != os.path.abspath(path) else ""))
    return target


def file_kind(mode):
    if stat.S_ISDIR(mode):
        return "it is a directory"
    for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return f"it is not a regular file but {what}"
    return "it is not a regular file"


def _temp_prefix(name):
    """``.<name>.fastprop-tmp-``, with ``name`` shortened so the temp name fits NAME_MAX."""
    while len(os.fsencode(name)) > 180:
        name = name[:-1]
    return f".{name}{_TMP_TAG}"


def _create_temp(directory, name):
    """Create ``.<name>.fastprop-tmp-<pid>-<16 hex>`` exclusively (mode 0600); (fd, path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(
        os, "O_BINARY", 0)
    prefix = _temp_prefix(name)
    for _ in range(100):
        tmp = os.path.join(directory, f"{prefix}{os.getpid()}-{secrets.token_hex(8)}")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {name!r} in {directory!r}")


def _remove_leftovers(directory, name):
    """Remove temp files of earlier saves to ``name`` whose process is gone (killed saves)."""
    if os.name != "posix":  # os.kill(pid, 0) probes only on POSIX
        return
    prefix = _temp_prefix(name)
    try:
        entries = [e.name for e in os.scandir(directory) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        m = _TMP_TAIL.match(entry, len(prefix))
        if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(os.path.join(directory, entry))
        except OSError:
            pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # exists but not ours (EPERM), or cannot tell: keep its file
    return True


def _set_mode(fd, path):
    """Give the temp file (mkstemp: 0600) the mode the destination has, or would have."""
    if not hasattr(os, "fchmod"):
        return
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    os.fchmod(fd, mode)


def _umask():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory):
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
