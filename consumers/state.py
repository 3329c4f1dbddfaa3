"""The worker's pipeline state and offsets, snapshotted to a local file.

The core keeps its counts in memory; this store makes them survive a
``kill -9``. Just before each offset commit the worker writes the whole
pipeline state together with the offsets it covers (write to a temporary
file, fsync, rename: a crash leaves the old snapshot or the new one, never
half of one). On start it restores the snapshot and resumes each partition
from ``max(snapshot offset, committed offset)``, so an event is in the
restored counts or is read again, never both.

Why pickle: the state is numpy arrays, River detectors and dicts of the
core's own classes; pickle is the one format that round-trips all of them
without the core exposing a serialisation API (msgspec/JSON would need one
per class). Each object says what its state is through ``__getstate__`` /
``__setstate__`` (the pipeline leaves out its parser, response scorer, stages, lock
and clock, and rebuilds them); this module only stores that state, with the
configuration and thresholds replaced by the restoring worker's. The file is
read only from the worker's own ``--state-dir``.

Format 2 (this one): the pipeline's ``__getstate__`` (per-model monitors, a
label index). Format 1 (fairwatch before the per-model monitors) pickled the
pipeline's attributes: a worker refuses it in one line that says to run once
with ``--rebuild-state`` (set aside, not deleted) or to go back to the version
that wrote it.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pickle
import threading
import time
from pathlib import Path

import msgspec

from fairwatch.monitor.config import DECISION_SETTINGS, STRUCTURAL_SETTINGS, ModelThresholds, changed_settings
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.errors import FairwatchError

log = logging.getLogger("fairwatch.state")

FORMAT_VERSION = 2
SNAPSHOT_NAME = "snapshot.pickle"
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class StateError(FairwatchError):
    """A snapshot cannot be used (counts under other structural settings, unreadable, locked dir): one line."""


def config_fingerprint(pipeline: Pipeline) -> bytes:
    return msgspec.json.encode(pipeline.config)


class _Pickler(pickle.Pickler):
    def __init__(self, file, pipeline: Pipeline) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.pipeline = pipeline

    def persistent_id(self, obj):
        if isinstance(obj, _LOCK_TYPES):
            return ("lock",)
        if obj is self.pipeline.config:
            return ("config",)
        if isinstance(obj, ModelThresholds):  # holds the config: rebuilt from the restoring worker's
            return ("thresholds", obj.model)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, pipeline: Pipeline) -> None:
        super().__init__(file)
        self.pipeline = pipeline

    def persistent_load(self, pid):
        kind = pid[0]
        if kind == "lock":
            return threading.Lock()
        if kind == "config":
            return self.pipeline.config
        if kind == "thresholds":
            return ModelThresholds(self.pipeline.config, pid[1])
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


class StateStore:
    """Snapshots in one directory, held by one worker at a time (an flock)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.directory / "lock", "a+")
        except OSError as exc:
            raise StateError(f"state dir {self.directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StateError(f"state dir {self.directory} is in use by another worker "
                             "(give each worker its own --state-dir)") from None
        self.path = self.directory / SNAPSHOT_NAME

    def save(self, pipeline: Pipeline, extra: dict) -> int:
        """Write the pipeline state and ``extra`` (offsets, worker counters) atomically; return bytes written."""
        buffer = io.BytesIO()
        with pipeline.lock:  # the exporter reads under the lock; nothing else writes while the worker saves
            _Pickler(buffer, pipeline).dump({"version": FORMAT_VERSION, "config": config_fingerprint(pipeline),
                                             "pipeline": pipeline.__getstate__(), "extra": extra})
        data = buffer.getbuffer()
        temporary = self.path.with_name(f".{SNAPSHOT_NAME}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)
        return len(data)

    def restore(self, pipeline: Pipeline) -> dict | None:
        """Load the snapshot into ``pipeline`` (a fresh one); return its ``extra``, or None without one."""
        if not self.path.exists():
            return None
        try:
            with open(self.path, "rb") as handle:
                document = _Unpickler(handle, pipeline).load()
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            raise StateError(f"snapshot {self.path} cannot be read ({exc}); move it away to start afresh") from None
        version = document.get("version") if isinstance(document, dict) else None
        if version != FORMAT_VERSION:
            raise StateError(f"snapshot {self.path} has format {version}, this fairwatch reads format "
                             f"{FORMAT_VERSION}; run once with --rebuild-state to set it aside (kept, not deleted) "
                             "and count again from the oldest offsets the topics retain, or go back to the "
                             "fairwatch version that wrote it")
        written_under = msgspec.json.decode(document["config"])
        structural = changed_settings(written_under, pipeline.config, STRUCTURAL_SETTINGS)
        if structural:
            shown = "; ".join(f"{k} {written_under.get(k)!r} -> {getattr(pipeline.config, k)!r}" for k in structural)
            raise StateError(f"snapshot {self.path} counts under other settings ({shown}); run once with "
                             "--rebuild-state to set it aside and count again from the oldest offsets the topics "
                             "retain, or go back to the old settings")
        pipeline.__setstate__(document["pipeline"])
        pipeline.apply_capacity_settings()
        # A decision setting the snapshot does not name is newer than its writer, whose
        # decision state may lack what the setting governs: those restart too.
        decisions = changed_settings(written_under, pipeline.config, DECISION_SETTINGS) + [
            k for k in DECISION_SETTINGS if k not in written_under]
        if decisions:
            pipeline.restart_decisions()
            log.warning("decision settings changed since the snapshot (%s): breach decisions and drift detectors "
                        "start afresh, counts are kept", ", ".join(decisions))
        return document["extra"]

    def set_aside(self) -> Path | None:
        """Rename the snapshot (for --rebuild-state); return its new path, or None without one."""
        if not self.path.exists():
            return None
        aside = self.path.with_name(f"{SNAPSHOT_NAME}.{time.strftime('%Y%m%dT%H%M%S')}.old")
        os.replace(self.path, aside)
        return aside

    def close(self) -> None:
        self._lock_file.close()


__all__ = ["StateStore", "StateError"]
