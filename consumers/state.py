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
per class). The file is read only from the worker's own ``--state-dir``.
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

log = logging.getLogger("fairwatch.state")

FORMAT_VERSION = 1
SNAPSHOT_NAME = "snapshot.pickle"
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
# Pipeline attributes rebuilt from the configuration rather than stored.
_REBUILT = ("config", "parser", "lock", "response_scorer")  # rebuilt: the scorer reloads its phrases and lexicon


class StateError(Exception):
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
        if obj is self.pipeline.parser:
            return ("parser",)
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
        if kind == "parser":
            return self.pipeline.parser
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
        state = {k: v for k, v in pipeline.__dict__.items() if k not in _REBUILT}
        buffer = io.BytesIO()
        with pipeline.lock:  # the exporter reads under the lock; nothing else writes while the worker saves
            _Pickler(buffer, pipeline).dump(
                {"version": FORMAT_VERSION, "config": config_fingerprint(pipeline), "pipeline": state, "extra": extra})
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
        if document.get("version") != FORMAT_VERSION:
            raise StateError(f"snapshot {self.path} has format {document.get('version')}, expected {FORMAT_VERSION}")
        written_under = msgspec.json.decode(document["config"])
        structural = changed_settings(written_under, pipeline.config, STRUCTURAL_SETTINGS)
        if structural:
            shown = "; ".join(f"{k} {written_under.get(k)!r} -> {getattr(pipeline.config, k)!r}" for k in structural)
            raise StateError(f"snapshot {self.path} counts under other settings ({shown}); run once with "
                             "--rebuild-state to set it aside and count again from the oldest offsets the topics "
                             "retain, or go back to the old settings")
        pipeline.__dict__.update(document["pipeline"])
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
