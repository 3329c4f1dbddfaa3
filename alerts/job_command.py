"""The job command template of the trigger: its placeholders, checked once at start-up, filled per incident.

>>> command = JobCommand("fairwatch finetune {data} --model-dir /models/{model} --out {out}")
>>> command.uses_data
True
>>> command.fill({"data": "w.jsonl", "model": "credit", "out": "c"})
['fairwatch', 'finetune', 'w.jsonl', '--model-dir', '/models/credit', '--out', 'c']
>>> JobCommand("train {incidnet}")
Traceback (most recent call last):
...
ValueError: --job-command: unknown placeholder {incidnet} (known: {incident} {model} {attribute} {out} {report} {data} {from} {to})
"""

from __future__ import annotations

import re
import shlex
from datetime import datetime, timezone

PLACEHOLDERS = {
    "incident": "the incident's id",
    "model": "the model of the breach",
    "attribute": "the protected attribute of the breach",
    "out": "a folder for the candidate model",
    "report": "where the job writes its JSON report",
    "data": "a JSONL file of the model's labeled events of the window, exported by the trigger before the job starts",
    "from": "start of the window, ISO-8601 UTC: the breach's onset minus the lookback",
    "to": "end of the window, ISO-8601 UTC: when the job was accepted",
}
# {name} as a placeholder; ${name} is the shell's (a job may run `sh -c '...${HOME}...'`), and braces around
# anything but a name (awk '{print $1}') are left alone.
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")


class JobCommand:
    """A shell-style command line; each placeholder fills inside one argument, never a shell."""

    def __init__(self, template: str) -> None:
        try:
            self.parts = shlex.split(template)
        except ValueError as exc:
            raise ValueError(f"--job-command: cannot split it into arguments ({exc})") from None
        used = {name for part in self.parts for name in _PLACEHOLDER.findall(part)}
        unknown = sorted(used - PLACEHOLDERS.keys())
        if unknown:
            raise ValueError(f"--job-command: unknown placeholder {' '.join('{' + n + '}' for n in unknown)} "
                             f"(known: {' '.join('{' + n + '}' for n in PLACEHOLDERS)})")
        self.used = used

    @property
    def uses_data(self) -> bool:
        return "data" in self.used

    def fill(self, values: dict[str, str]) -> list[str]:
        return [_PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), part) for part in self.parts]


# --job-policy MODEL=none|finetune|'a command': what an incident of MODEL runs.
NO_JOB = "none"
DEFAULT_JOB = "finetune"


def parse_job_policies(entries: list[str] | None, default_command: str | None) -> dict[str, str | None]:
    """{model: its command, or None for no job} from ``--job-policy`` entries; a ValueError worded for one line.

    ``none``: the model's incidents open with their evidence and run no job (a tabular model has no text to
    fine-tune on). ``finetune``: ``--job-command`` (the default for models not named). Anything else: that
    model's own command, with the same placeholders, checked here at start-up.

    >>> parse_job_policies(["credit=none", "toxic=finetune", "ranker=train {data} --out {out}"], "ft {data}")
    {'credit': None, 'toxic': 'ft {data}', 'ranker': 'train {data} --out {out}'}
    >>> parse_job_policies(["credit"], None)
    Traceback (most recent call last):
    ...
    ValueError: --job-policy 'credit': expected MODEL=none, MODEL=finetune or MODEL='a command'
    """
    from fairwatch.alerts.labels import unsafe_label_reason

    policies: dict[str, str | None] = {}
    for entry in entries or ():
        model, sep, value = entry.partition("=")
        model, value = model.strip(), value.strip()
        if not sep or not model or not value:
            raise ValueError(f"--job-policy {entry!r}: expected MODEL={NO_JOB}, MODEL={DEFAULT_JOB} or "
                             "MODEL='a command'")
        reason = unsafe_label_reason("model", model)
        if reason:
            raise ValueError(f"--job-policy {entry!r}: {reason}")
        if model in policies:
            raise ValueError(f"--job-policy: model {model!r} is given twice")
        if value == NO_JOB:
            policies[model] = None
        elif value == DEFAULT_JOB:
            if not default_command:
                raise ValueError(f"--job-policy {entry!r}: '{DEFAULT_JOB}' runs --job-command, which is not set")
            policies[model] = default_command
        else:
            try:
                JobCommand(value)
            except ValueError as exc:
                raise ValueError(f"--job-policy {model}: {str(exc).removeprefix('--job-command: ')}") from None
            policies[model] = value
    return policies


def breach_onset(incident: dict) -> float:
    """When the breach began, as far as the trigger knows: the earliest ``startsAt`` of its alerts (Alertmanager
    sets it when the alert starts firing), else when the incident was opened."""
    onset = incident["opened_at"]
    for alert in incident.get("alerts") or ():
        try:
            starts = _rfc3339_seconds(alert["startsAt"])
        except (KeyError, TypeError, ValueError, OverflowError):  # unreadable: the opening time stands
            continue
        # Before the epoch is no breach of ours: Go's zero time (0001-01-01) is Alertmanager's "unset", and a window
        # reaching back past year 1 cannot be written as a date.
        if starts >= 0:
            onset = min(onset, starts)
    return onset


def _rfc3339_seconds(text: str) -> float:
    # Alertmanager writes nanoseconds (…:00.123456789Z); datetime reads at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def iso_utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


__all__ = ["DEFAULT_JOB", "JobCommand", "NO_JOB", "PLACEHOLDERS", "breach_onset", "iso_utc", "parse_job_policies"]
