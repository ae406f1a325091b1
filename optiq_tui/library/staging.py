"""Build a model folder out of sight and move it into the library only when whole.

Import, download and quantize all write into a temporary folder under the
app's staging area (same filesystem as the models folder) and rename it into
place at the end, so a crash, Ctrl-C or full disk never leaves a half-made
model where the catalog would list it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from optiq_tui.progress import OptiqError
from optiq_tui.settings import paths
from optiq_tui.sizes import human_bytes

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_OWNER = re.compile(r"\.pid(\d+)$")


def safe_name(name: str) -> str:
    """A folder name from a display name or repo id ('org/model' -> 'org--model')."""
    cleaned = _SAFE.sub("-", name.replace("/", "--")).strip(".-")
    if not cleaned:
        raise OptiqError(f"{name!r} is not usable as a model name")
    return cleaned


def free_bytes(folder: Path) -> int:
    """Free space on the filesystem holding ``folder`` (or its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def require_space(folder: Path, needed: int, what: str) -> None:
    """OptiqError before starting when ``what`` needs more than ``folder``'s disk has free."""
    have = free_bytes(folder)
    if needed > have:
        raise OptiqError(
            f"{what} needs about {human_bytes(needed)} free in {folder}, but only {human_bytes(have)} is free; "
            "free some space (or set OPTIQ_HOME to a bigger disk) and try again"
        )


def is_disk_full(exc: BaseException) -> bool:
    """A write that failed for lack of space: OSError ENOSPC/EDQUOT, or MLX's failed write
    (mx.save_* raises RuntimeError "[write] Unable to write N bytes to file.")."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, RuntimeError) and "Unable to write" in str(exc)


def disk_full_error(folder: Path, what: str, needed: int | None = None) -> OptiqError:
    """The one-line message for a write that ran out of space (after cleaning up)."""
    need = f"it needs about {human_bytes(needed)}; " if needed else ""
    return OptiqError(
        f"the disk is full while writing {what}; nothing was kept. {need}{human_bytes(free_bytes(folder))} "
        f"is free in {folder}. Free some space (see `optiq-chat list` for model sizes) and try again."
    )


@contextmanager
def staged_model(name: str, *, overwrite: bool = False, needed: int | None = None) -> Iterator[Path]:
    """Yield an empty folder; on clean exit it becomes ``models/<name>``.

    ``needed`` (bytes, when known) is checked against the free space before anything
    is written. On any exception (Cancelled and KeyboardInterrupt included) the folder
    is removed and the exception propagates; a full disk becomes an OptiqError.
    """
    p = paths()
    final = p.models / safe_name(name)
    if final.exists() and not overwrite:
        raise OptiqError(f"a model named {final.name!r} already exists in the library")
    if needed:
        require_space(p.staging, needed, repr(final.name))
    # The owner's pid in the name lets clean_staging tell a live operation from a killed one.
    tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.", suffix=f".pid{os.getpid()}", dir=p.staging))
    # mkdtemp makes a private (0700) folder; a library model gets the usual umask permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{final.name}.old.", dir=p.staging))
            os.replace(final, old / "m")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full_error(p.staging, repr(final.name), needed) from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (another user's process counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_staging() -> int:
    """Remove what killed operations left in the staging area; returns how many.

    A folder whose owner process still runs (another optiq-chat quantizing,
    say) is left alone.
    """
    count = 0
    for child in paths().staging.iterdir():
        owner = _OWNER.search(child.name)
        if owner and pid_alive(int(owner.group(1))):
            continue
        shutil.rmtree(child, ignore_errors=True)
        count += 1
    return count
