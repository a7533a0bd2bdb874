"""The run directory: where a run's artifacts live, and the guarantees that keep them honest.

- **Nothing of the user's is deleted.** A directory becomes a run directory when refusalkit writes
  its marker file (``.refusalkit-run``) into it, empty or new. ``--force`` replaces only a directory
  holding that marker; a non-empty directory without it is refused whatever the flag, and so are
  the current directory, the home directory, a filesystem root and every directory above them
  (replacing them would delete the place the user stands in).
- **One run at a time.** An exclusive ``flock`` on ``.refusalkit-lock`` is held for the run's whole
  life; a second run into the same directory exits with one line naming the holder's pid. The
  kernel drops the lock when its process dies (kill -9 included), so a stale lock is taken over by
  the next run with no clean-up and no race.
- **Resume only from the same inputs.** The resume key is the configuration *and* the content of
  every input (:mod:`refusalkit.runs.identity`); a rerun after an interruption resumes only if both
  match, says from which stage, and otherwise explains what changed.
- **Finished means finished.** A workflow writes its result file (``summary.json`` for ``run``,
  ``comparison.json`` for ``compare``) last, after every other artifact including the HTML report,
  and only then marks ``status.json`` complete. Any failure before that — a full disk while the
  report is written included — leaves status ``failed`` with the reason and no result file, and the
  same command resumes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from refusalkit.errors import RefusalkitError
from refusalkit.io import is_temporary, read_json, write_json
from refusalkit.runs.identity import describe_difference

logger = logging.getLogger(__name__)

MARKER = ".refusalkit-run"
LOCK = ".refusalkit-lock"
IDENTITY = "inputs.json"
CONFIG = "config.json"
STATUS = "status.json"
# Files that only refusalkit's own bookkeeping puts into a directory before a run has begun.
_BOOKKEEPING = {MARKER, LOCK}


def _protected(path: Path) -> str | None:
    """Why ``path`` (resolved) may never be used as a run directory, or None."""
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if path == Path(path.anchor):
        return "it is a filesystem root"
    if path == cwd or path in cwd.parents:
        return "it is the current directory or contains it"
    if path == home or path in home.parents:
        return "it is your home directory or contains it"
    return None


def _entries(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.iterdir()) if path.is_dir() else []


def check_output_path(out: Path) -> Path:
    """Validate ``--out`` before anything is computed or written; return its resolved path.

    Symbolic links are resolved, so the checks and any replacement act on the real directory."""
    try:
        path = out.expanduser().resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop
        raise RefusalkitError(f"--out {out} cannot be resolved ({error})") from error
    reason = _protected(path)
    if reason:
        raise RefusalkitError(
            f"--out {out} cannot be a run directory: {reason}; choose a new directory, e.g. "
            "--out refusalkit-runs/my-run"
        )
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                what = (
                    "exists and is not a directory"
                    if parent == path
                    else f"is under {parent}, which is a file"
                )
                raise RefusalkitError(f"--out {out} {what}; choose another --out")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise RefusalkitError(
                    f"--out {out}: {parent} is not writable; choose a writable location"
                )
            break
    foreign = [
        name
        for name in _entries(path)
        # another run writing its marker right now leaves a temporary for a moment: not a user's
        if name not in _BOOKKEEPING and not is_temporary(name)
    ]
    if foreign and MARKER not in _entries(path):
        raise RefusalkitError(
            f"--out {out} holds files refusalkit did not write ({', '.join(foreign[:3])}"
            f"{', …' if len(foreign) > 3 else ''}); refusalkit never replaces them, with or "
            "without --force: choose another --out"
        )
    return path


class RunLock:
    """An exclusive advisory lock on a run directory, released when closed or when the process
    dies."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = self._holder()
            raise RefusalkitError(
                f"run directory {self.path.parent} is in use by another refusalkit process"
                f"{f' (pid {holder})' if holder else ''}; wait for it to finish or choose "
                "another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _holder(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class RunDirectory:
    """A locked run directory (see the module docstring). Use as a context manager: the lock is
    held until the block exits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = RunLock(path)
        self.resumed_from: str | None = None

    def file(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def open(
        cls, out: Path, identity: dict[str, Any], *, result_file: str, force: bool
    ) -> RunDirectory:
        """Create, resume or (with ``force``) replace the run directory at ``out`` and lock it.

        ``identity`` is ``{"config": ..., <input>: <content digest>, ...}``; ``result_file`` is the
        file whose presence means the workflow finished."""
        path = check_output_path(out)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RefusalkitError(
                f"cannot create --out {out} ({error.strerror}); choose another --out"
            ) from error
        directory = cls(path)
        directory._lock.acquire()
        try:  # compared as stored: JSON turns tuples into lists
            directory._begin(json.loads(json.dumps(identity)), result_file, force)
        except BaseException:
            directory.close()
            raise
        return directory

    def _begin(self, identity: dict[str, Any], result_file: str, force: bool) -> None:
        check_output_path(self.path)  # again under the lock: files may have appeared meanwhile
        if MARKER in _entries(self.path):
            finished = self.file(result_file).exists()
            stored = self._stored_identity()
            if force:
                self._clear()
            elif finished:
                raise RefusalkitError(
                    f"run directory {self.path} already holds a finished run; pass --force to "
                    "replace it or choose another --out"
                )
            elif stored == identity:
                self.resumed_from = self._interrupted_stage()
                logger.info("resuming the unfinished run in %s from stage '%s' (finished "
                            "stages are reused)", self.path, self.resumed_from)  # fmt: skip
                return
            else:
                what = (
                    describe_difference(stored or {}, identity)
                    if stored
                    else ("it has no record of its inputs")
                )
                raise RefusalkitError(
                    f"run directory {self.path} holds an unfinished run with other inputs "
                    f"({what}); its results cannot be reused: pass --force to start over or "
                    "choose another --out"
                )
        write_json(self.file(MARKER), {"refusalkit_run_directory": 1, "created": time.time()})
        write_json(self.file(CONFIG), identity["config"])
        write_json(self.file(IDENTITY), {k: v for k, v in identity.items() if k != "config"})

    def _stored_identity(self) -> dict[str, Any] | None:
        if not (self.file(CONFIG).is_file() and self.file(IDENTITY).is_file()):
            return None
        inputs = read_json(self.file(IDENTITY))
        if not isinstance(inputs, dict):
            return None
        return {"config": read_json(self.file(CONFIG)), **inputs}

    def _interrupted_stage(self) -> str:
        try:
            status = json.loads(self.file(STATUS).read_text(encoding="utf-8"))
            return str(status.get("stage", "start"))
        except (OSError, ValueError, AttributeError):
            return "start"

    def _clear(self) -> None:
        """Empty a run directory for ``--force``; the lock file (held by us) stays. Symbolic links
        inside are removed, never followed."""
        for name in _entries(self.path):
            if name == LOCK:
                continue
            entry = self.path / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    @staticmethod
    def status_record(stage: str, state: str, message: str = "") -> dict[str, Any]:
        """What ``status.json`` holds: the stage, running | complete | failed, why, who, when."""
        return {"stage": stage, "state": state, "message": message, "pid": os.getpid(),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip

    def status(self, stage: str, state: str, message: str = "") -> None:
        record = self.status_record(stage, state, message)
        if state == "failed":
            try:  # best effort: the failure being recorded may be a full disk
                write_json(self.file(STATUS), record)
            except OSError as error:
                logger.warning("could not record the failure in %s (%s)", self.file(STATUS), error)
            return
        write_json(self.file(STATUS), record)

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
