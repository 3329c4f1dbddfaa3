"""Hot attach: a running worker picks a shadow candidate up from a control file, between batches, no restart.

``fairwatch incidents attach ID --control FILE`` writes the incident's
candidate and model into a small JSON file; a worker started with
``--shadow-control FILE`` looks at the file's stat before each batch (one
system call), and when it changed, reads it and attaches
the candidate (a :class:`~monitor.scorer.shadow.ShadowStep`, run by the
pipeline after the worker's counterfactual scorer, if any) from that batch
on, or detaches it when the file says ``{"candidate": null}`` or is removed. ``<model>:baseline`` starts
with the candidate, so the two count the same events from the attach.

A control file the worker cannot use (not JSON, a missing model, a
candidate that does not load) is one warning line and changes nothing: the
batch is applied, the shadow in place stays. Once a candidate has been
attached, another one is refused until the worker restarts: the
``:candidate`` counters would mix two models' decisions (attaching the same
one again after a detach is fine: both sides paused together).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fairwatch.monitor.errors import FairwatchError
from fairwatch.monitor.stages import Stage

__all__ = ["Attachment", "ControlError", "HotShadowStep", "read_control", "write_control"]

log = logging.getLogger("fairwatch.shadow")


class ControlError(FairwatchError, ValueError):
    """A control file that cannot be used, worded for one line."""


@dataclass(frozen=True)
class Attachment:
    candidate: str  # the candidate's directory (the fine-tune's --out folder, or the model inside it)
    model: str  # the production model it shadows
    threshold: float = 0.5
    incident: int | None = None  # the incident it came from, for the log


def read_control(path: str | Path) -> Attachment | None:
    """The attachment the file asks for; None when it is absent or says ``{"candidate": null}``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ControlError(f"cannot read it ({exc})") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ControlError(f"not JSON ({exc})") from None
    if not isinstance(document, dict) or "candidate" not in document:
        raise ControlError('expected an object with "candidate" (a directory, or null to detach) and "model"')
    if document["candidate"] is None:
        return None
    candidate, model = document["candidate"], document.get("model")
    if not isinstance(candidate, str) or not candidate:
        raise ControlError('"candidate" must be a directory path or null')
    if not isinstance(model, str) or not model:
        raise ControlError('"model" must name the production model the candidate shadows')
    threshold = document.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0 \
            or math.isnan(threshold):
        raise ControlError('"threshold" must be a number between 0 and 1')
    incident = document.get("incident")
    if incident is not None and (isinstance(incident, bool) or not isinstance(incident, int)):
        raise ControlError('"incident" must be an incident id or absent')
    return Attachment(candidate, model, float(threshold), incident)


def write_control(path: str | Path, attachment: Attachment | None) -> None:
    """Replace the control file whole (a worker never reads half of it); None detaches."""
    path = Path(path)
    document = asdict(attachment) if attachment is not None else {"candidate": None}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document) + "\n", encoding="utf-8")
    os.replace(temporary, path)


class HotShadowStep(Stage):
    """A pipeline stage that runs the shadow candidate a control file names, if any, looking before each batch.

    ``load(attachment)`` builds the :class:`ShadowStep` (it loads the
    candidate; a ValueError says why it cannot).
    """

    def __init__(self, control: str | Path, load: Callable[[Attachment], Any], *,
                 poll_seconds: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.control = Path(control)
        self.load = load
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.shadow: Any = None  # the ShadowStep while a candidate is attached
        self.attachment: Attachment | None = None
        self.first: Attachment | None = None  # the one candidate this worker may shadow
        self._signature: tuple | None = None
        self._next_poll = -math.inf

    def poll(self) -> None:
        """Act on the control file if it changed since the last look (with ``poll_seconds``, at most that often)."""
        now = self.clock()
        if now < self._next_poll:
            return
        self._next_poll = now + self.poll_seconds
        try:
            stat = self.control.stat()
            signature: tuple | None = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            signature = None
        if signature == self._signature:
            return
        self._signature = signature
        try:
            wanted = read_control(self.control)
        except ControlError as exc:
            log.warning("shadow control %s: %s; nothing changed", self.control, exc)
            return
        if wanted == self.attachment:
            return
        if wanted is None:
            log.info("shadow detached: %s no longer scores %s", self.attachment.candidate, self.attachment.model)
            self.shadow.close()
            self.shadow, self.attachment = None, None
            return
        if self.first is not None and wanted != self.first:
            log.warning("shadow control %s: this worker shadowed %s for %s; restart it to compare %s "
                        "(the :candidate counters would mix two models); nothing changed",
                        self.control, self.first.candidate, self.first.model, wanted.candidate)
            return
        try:
            shadow = self.load(wanted)
        except ValueError as exc:
            log.warning("shadow control %s: %s; nothing changed", self.control, exc)
            return
        if self.shadow is not None:
            self.shadow.close()
        self.shadow, self.attachment, self.first = shadow, wanted, wanted
        log.info("shadow attached: %s scores the texts of %s beside production from this batch on%s",
                 wanted.candidate, wanted.model, f" (incident {wanted.incident})" if wanted.incident else "")

    def derive(self, events: list, pipeline: Any = None) -> dict:
        """Look at the control file, then the attached candidate's predictions of the batch (none without one)."""
        self.poll()
        return self.shadow.derive(events, pipeline) if self.shadow is not None else {}

    def close(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
