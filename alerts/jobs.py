"""Fine-tune jobs of incidents: at most ``max_concurrent_jobs`` at once, the rest queued.

A job is the configured command with the incident's fields filled in; it
runs once per incident and its fate (``job_running`` -> ``job_succeeded`` or
``job_failed``) goes to the incident store. Jobs beyond the concurrency limit
wait in ``job_queued``, in arrival order; beyond ``max_queued_jobs`` an
incident goes back to ``awaiting_approval`` (a human approves it later), so
a storm of incidents never becomes a storm of processes or an unbounded queue.
A job dies with the trigger (Linux: the parent-death signal), so that a job
recorded as failed after a restart is not still writing its candidate.

A command that names ``{data}`` gets the model's labeled events of the
incident's window (``{from}`` to ``{to}``) in a file that the trigger
exports before the job starts, on the job's own thread (``window_export``,
given by the command line: ``fairwatch export``'s reader). The trigger does
it, not the job, so that a platform engineer writes one plain command and
the Kafka address and credentials stay in one place, the trigger's.
"""

from __future__ import annotations

import ctypes
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fairwatch.alerts.incidents import IncidentError, IncidentStore
from fairwatch.alerts.job_command import JobCommand, breach_onset, iso_utc
from fairwatch.alerts.labels import unsafe_label_reason
from fairwatch.monitor.errors import first_line

log = logging.getLogger("fairwatch.trigger.jobs")

NO_COMMAND = "no job command configured: the trigger has nothing to run; resolve the incident when handled"
RESTARTED = "trigger restarted while the job ran"
# States from which a job may start: a resolved incident (or one whose job ran) never starts one.
STARTABLE = ("open", "approved", "job_queued")
DEFAULT_LOOKBACK_SECONDS = 86_400.0
# Ten years: far beyond any retention a window is read from, and far from where dates stop (year 1).
MAX_LOOKBACK_SECONDS = 10 * 365 * 86_400.0
DATA_FILE = "window.jsonl"

# (model, window start, window end, file) -> (lines for the job's log, counts for the incident); raises with a
# one-line message when there is nothing to export or Kafka cannot be read.
WindowExport = Callable[[str, float, float, Path], "tuple[list[str], dict]"]


@dataclass(frozen=True)
class Job:
    incident_id: int
    argv: list[str]
    folder: Path
    report_path: str
    model: str = ""
    window: tuple[float, float] = (0.0, 0.0)  # epoch seconds, {from} and {to}
    data_path: Path | None = None  # set when the command names {data}: export the window here first


PR_SET_PDEATHSIG = 1
# Looked up once here: the child may only make async-signal-safe calls between fork and exec.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class JobRunner:
    """Runs the fine-tune command of incidents on a bounded number of threads.

    ``command`` is a shell-style template with the placeholders of
    ``alerts.job_command.PLACEHOLDERS`` (``{incident}``, ``{model}``,
    ``{attribute}``, ``{out}``, ``{report}``, ``{data}``, ``{from}``,
    ``{to}``); an unknown one is a ValueError here, at start-up. Each fills
    inside one argument, never a shell, and model and attribute are
    identifiers (``alerts.labels``) so they cannot become an option or climb
    a path. The window runs from the breach's onset minus
    ``lookback_seconds`` to when the job is accepted.
    """

    def __init__(self, store: IncidentStore, command: str | None, workdir: str | Path, timeout_seconds: float = 3600,
                 max_concurrent_jobs: int = 2, max_queued_jobs: int = 1000, *,
                 window_export: WindowExport | None = None, lookback_seconds: float = DEFAULT_LOOKBACK_SECONDS,
                 clock=time.time, policies: dict[str, str | None] | None = None):
        if max_concurrent_jobs < 1 or max_queued_jobs < 0:
            raise ValueError("max_concurrent_jobs must be >= 1 and max_queued_jobs >= 0")
        if not 0 <= lookback_seconds <= MAX_LOOKBACK_SECONDS:
            raise ValueError(f"the window's lookback must be 0 to {MAX_LOOKBACK_SECONDS:.0f} seconds (ten years), "
                             f"got {lookback_seconds}")
        self.template = JobCommand(command) if command else None
        # Per model (--job-policy): its own command, or None for no job; models not named run ``command``.
        self.policies = {model: JobCommand(text) if text else None for model, text in (policies or {}).items()}
        for model, template in [("--job-command", self.template), *self.policies.items()]:
            if template is not None and template.uses_data and window_export is None:
                where = model if model == "--job-command" else f"--job-policy {model}"
                raise ValueError(f"{where} names {{data}} but the trigger has no Kafka to export the window from")
        self.window_export = window_export
        self.lookback_seconds = lookback_seconds
        self.clock = clock
        self.store = store
        self.command = command
        self.workdir = Path(workdir)
        self.timeout_seconds = timeout_seconds
        self.max_concurrent_jobs = max_concurrent_jobs
        self.max_queued_jobs = max_queued_jobs
        self._accepted: set[int] = set()
        self._queue: deque[Job] = deque()
        self._running = 0
        self.peak_running = 0  # the most jobs that ran at once, for tests and /healthz
        self._changed = threading.Condition()
        self.threads: list[threading.Thread] = []

    def start(self, incident: dict) -> bool:
        """Run or queue the job once per incident; False when it ran already, cannot run, or the queue is full."""
        incident_id = incident["id"]
        with self._changed:
            if incident_id in self._accepted or incident["job"].get("state") in ("running", "succeeded", "failed"):
                if incident["state"] == "approved":  # an approval must end somewhere, not wait for good
                    self.store.set_state(incident_id, "job_skipped", {"why": "its job already ran"},
                                         expect=("approved",))
                return False
            template = self.template_for(incident["model"])
            if template is None:
                why = (NO_COMMAND if incident["model"] not in self.policies else
                       f"job policy of model {incident['model']}: none (its incidents run no job)")
                self.store.set_state(incident_id, "job_skipped", {"why": why}, job={"state": "skipped"})
                return False
            for name in ("model", "attribute"):
                reason = unsafe_label_reason(name, incident[name])
                if reason:
                    self.store.set_state(incident_id, "job_failed", {"error": reason},
                                         job={"state": "failed", "error": reason})
                    return False
            if self._running >= self.max_concurrent_jobs and len(self._queue) >= self.max_queued_jobs:
                why = f"job queue full ({len(self._queue)} waiting): approve to queue it again"
                self.store.set_state(incident_id, "awaiting_approval", {"why": why}, job={"state": "awaiting_approval"})
                return False
            try:
                job = self._job(incident, template)
            except Exception as exc:  # e.g. a window no date can express: this incident's job fails, not the delivery
                reason = f"cannot start the job: {first_line(exc)}"
                log.warning("incident %s: %s", incident_id, reason)
                self.store.set_state(incident_id, "job_failed", {"error": reason},
                                     job={"state": "failed", "error": reason})
                return False
            self._accepted.add(incident_id)
            try:
                if self._running < self.max_concurrent_jobs:
                    self._mark_running(job)
                    if not self._start_thread(job):
                        return False
                else:
                    self.store.set_state(incident_id, "job_queued", {"position": len(self._queue) + 1},
                                         job={"state": "queued", "command": job.argv}, expect=STARTABLE)
                    self._queue.append(job)
            except IncidentError as exc:  # a human resolved it meanwhile
                log.info("job of incident %s not started: %s", incident_id, exc)
                return False
            except BaseException:  # not started (the store failed): its next delivery may start it
                self._accepted.discard(incident_id)
                raise
            return True

    def _start_thread(self, job: Job) -> bool:
        """Give a job marked running a slot and a thread of its own (call with the lock held). A thread the
        system refuses (``can't start new thread``) fails that job and gives its slot back; False then."""
        thread = threading.Thread(target=self._work, args=(job,), daemon=True, name=f"fine-tune-{job.incident_id}")
        self._running += 1
        try:
            thread.start()
        except BaseException as exc:
            # Nothing will ever run _work's ``self._running -= 1``: without this the slot stays taken until a restart.
            self._running -= 1
            self._accepted.discard(job.incident_id)
            self._changed.notify_all()
            if not isinstance(exc, Exception):
                raise
            reason = f"cannot start the job: {first_line(exc)}"
            log.warning("incident %s: %s", job.incident_id, reason)
            self._finish(job.incident_id, "job_failed", {"error": reason}, {"state": "failed", "error": reason})
            return False
        self.threads.append(thread)
        self.peak_running = max(self.peak_running, self._running)
        return True

    def template_for(self, model: str) -> JobCommand | None:
        """The command an incident of ``model`` runs: its --job-policy, else --job-command; None: no job."""
        return self.policies[model] if model in self.policies else self.template

    def _job(self, incident: dict, template: JobCommand) -> Job:
        folder = self.workdir / f"incident-{incident['id']}"
        window = (breach_onset(incident) - self.lookback_seconds, self.clock())
        data_path = folder / DATA_FILE if template.uses_data else None
        values = {"incident": str(incident["id"]), "model": incident["model"], "attribute": incident["attribute"],
                  "out": str(folder / "candidate"), "report": str(folder / "report.json"),
                  "from": iso_utc(window[0]), "to": iso_utc(window[1]), "data": str(data_path or "")}
        return Job(incident["id"], template.fill(values), folder, values["report"], incident["model"], window,
                   data_path)

    def _mark_running(self, job: Job) -> None:
        self.store.set_state(job.incident_id, "job_running", {"command": job.argv},
                             job={"state": "running", "command": job.argv, "report_path": job.report_path,
                                  "candidate_dir": str(job.folder / "candidate")}, expect=STARTABLE)

    def _next(self) -> Job | None:
        """The next queued job still wanted, marked running (call with the lock held)."""
        while self._queue:
            job = self._queue.popleft()
            try:
                self._mark_running(job)
                return job
            except IncidentError as exc:  # resolved by a human while it waited
                log.info("queued job of incident %s dropped: %s", job.incident_id, exc)
        return None

    def _work(self, job: Job | None) -> None:
        """One slot: run a job, then the queued ones, until the queue is empty."""
        while job is not None:
            self._run(job)
            with self._changed:
                job = self._next()
                if job is None:
                    self._running -= 1
                    self._changed.notify_all()

    def _finish(self, incident_id: int, state: str, detail: dict, job: dict) -> None:
        """Record the job's end; an incident a human resolved meanwhile stays resolved, with the result noted."""
        try:
            self.store.set_state(incident_id, state, detail, job=job, expect=("job_running",))
        except IncidentError:
            self.store.merge_job(incident_id, job)
            self.store.note(incident_id, state, detail)

    def _run(self, job: Job) -> None:
        try:
            job.folder.mkdir(parents=True, exist_ok=True)
            with open(job.folder / "job.log", "wb") as log_file:
                if job.data_path is not None and not self._export(job, log_file):
                    return
                # The thread that forks stays in subprocess.run until the child exits,
                # so the parent-death signal fires only when the trigger itself dies.
                process = subprocess.Popen(job.argv, stdout=log_file, stderr=subprocess.STDOUT,
                                           preexec_fn=_die_with_parent if _prctl else None)
                self.store.merge_job(job.incident_id, {"pid": process.pid})
                try:
                    returncode = process.wait(timeout=self.timeout_seconds)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    raise
            report_file = Path(job.report_path)
            report = json.loads(report_file.read_text()) if report_file.exists() else None
            if returncode == 0:
                self._finish(job.incident_id, "job_succeeded", {"returncode": 0},
                             {"state": "succeeded", "report": report})
            else:
                self._finish(job.incident_id, "job_failed", {"returncode": returncode},
                             {"state": "failed", "report": report})
        except Exception as exc:  # a broken job must not take the trigger down
            log.exception("fine-tune job of incident %s failed", job.incident_id)
            self._finish(job.incident_id, "job_failed", {"error": f"{type(exc).__name__}: {exc}"}, {"state": "failed"})

    def _export(self, job: Job, log_file) -> bool:
        """Write the job's {data} file; on failure the job fails with the reason and never starts."""
        try:
            lines, counts = self.window_export(job.model, job.window[0], job.window[1], job.data_path)
        except Exception as exc:  # nothing to export, Kafka down, a bug: this job fails, the trigger goes on
            reason = f"window export: {exc}" if str(exc) else f"window export: {type(exc).__name__}"
            log_file.write(f"{reason}\n".encode())
            self._finish(job.incident_id, "job_failed", {"error": reason}, {"state": "failed", "error": reason})
            return False
        log_file.write("".join(f"{line}\n" for line in lines).encode())
        log_file.flush()
        self.store.merge_job(job.incident_id, {"data": str(job.data_path), "export": counts})
        return True

    def recover(self) -> None:
        """After a restart: jobs that were running are failed (their process died with the
        trigger), jobs that were queued are queued again, in their order."""
        for incident in self.store.list("job_running"):
            self.store.set_state(incident["id"], "job_failed", {"error": RESTARTED},
                                 job={"state": "failed", "error": RESTARTED})
        for incident in self.store.list("job_queued"):
            self.start(incident)

    def queued(self) -> int:
        with self._changed:
            return len(self._queue)

    def wait(self, timeout: float = 60.0) -> bool:
        """Until no job runs or waits; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._running == 0 and not self._queue, timeout)
