"""Output places: checked writable before any work starts, and written by one run at a time.

A run that claims its output place first removes the temporary files that killed writers left
there (checkpoints, progress files). A run that writes a folder takes ``<folder>/.snnconvert.lock`` (a file output: ``<file>.lock``),
created exclusively and holding the run's pid. A second run that finds the lock held by a live
process is refused with that pid, so two runs cannot overwrite each other's reports and
checkpoints; a lock left by a process that is gone (killed) is taken over.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from snnconvert.errors import OutputError


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


#: ``.NAME.PID.XXXXXXXX.tmp``: a file being written by process PID (see ``checkpoint.atomic_save``)
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files in ``folder`` (of the file ``name`` only, if given) whose writer
    is gone (killed mid-write); returns them. Those of live writers are left alone."""
    removed = []
    for path in folder.glob(".*.tmp") if folder.is_dir() else ():
        match = TEMPORARY.match(path.name)
        if match and (name is None or match["name"] == name) and not process_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class OutputLock:
    """The lock of one output place (see the module docstring); :meth:`release` gives it back."""

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def acquire(self, target: Path) -> None:
        for _ in range(2):  # a second try after taking over a dead process's lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and holder != os.getpid() and process_alive(holder):
                    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.path.stat().st_mtime))
                    raise OutputError(f"{target} is being written by another snnconvert run (pid {holder}, since "
                                      f"{since}): wait for it to finish, or pass another --out") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as e:
                raise OutputError(f"cannot write to {target} ({e.strerror}): pass an --out in a writable place") from e
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return
        raise OutputError(f"cannot take the lock {self.path} of {target}: another run keeps taking it; pass another --out")

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held and self._holder() == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False


def claim_output(target: str | Path, folder: bool) -> OutputLock:
    """Make sure ``target`` (a folder, or a file's folder) can be written, and lock it for this run.

    Raises:
        OutputError: naming the place and why it cannot be written, or the pid of the run writing it.
    """
    target = Path(target)
    place = target if folder else target.parent
    try:
        place.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write to {target} ({e.strerror or e}): pass an --out in a writable place") from e
    if not os.access(place, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {target} (no write permission on {place}): pass an --out in a writable "
                          "place")
    lock = OutputLock(place / ".snnconvert.lock" if folder else target.with_name(target.name + ".lock"))
    lock.acquire(target)
    remove_stale_temporaries(place)  # of checkpoints and progress files whose writers were killed
    return lock
