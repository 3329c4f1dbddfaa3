"""``fairwatch incidents shadow ID``: record how the incident's candidate did on live traffic beside production."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fairwatch.alerts.incident_summary import firing_metrics
from fairwatch.alerts.incidents import IncidentError, IncidentStore, incident_id
from fairwatch.alerts.promotion import live_summary
from fairwatch.alerts.shadow_comparison import (DEFAULT_MIN_EVENTS, ShadowEvidenceError, compare_shadow,
                                                shadow_from_prometheus, shadow_from_report)

__all__ = ["add_attach_action", "add_shadow_action", "attach_candidate", "record_shadow"]


def add_shadow_action(actions) -> argparse.ArgumentParser:
    shadow = actions.add_parser(
        "shadow", help="compare the candidate with production on the same live events (the worker's shadow) "
                       "and record it: promote refuses a candidate worse than production")
    shadow.add_argument("id", type=incident_id)
    source = shadow.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus-url", help="read <model>:candidate and <model>:baseline from this Prometheus "
                        "(every worker summed)")
    source.add_argument("--report", metavar="FILE", help="read them from a `fairwatch replay --report json` file (none: from --prometheus-url)")
    shadow.add_argument("--min-events", type=int, default=DEFAULT_MIN_EVENTS,
                        help=f"shadowed events needed for a verdict ({DEFAULT_MIN_EVENTS})")
    return shadow


def add_attach_action(actions) -> argparse.ArgumentParser:
    attach = actions.add_parser(
        "attach", help="put the incident's candidate in the shadow of production on a running worker started with "
                       "--shadow-control FILE (no restart), or take it out (--detach)")
    attach.add_argument("id", type=incident_id)
    attach.add_argument("--control", required=True, metavar="FILE", help="the worker's --shadow-control file")
    attach.add_argument("--threshold", type=float, default=0.5, help="decision threshold on the candidate's scores "
                        "(0.5)")
    attach.add_argument("--detach", action="store_true", help="stop shadowing (the counters so far stay)")
    return attach


def attach_candidate(store: IncidentStore, incident_id: int, control: str, threshold: float = 0.5,
                     detach: bool = False) -> str:
    """Write the worker's control file for the incident's candidate (or a detach); note it; return one line."""
    from fairwatch.monitor.scorer.shadow_control import Attachment, write_control

    incident = store.get(incident_id)
    job = incident["job"]
    if not detach and (job.get("state") != "succeeded" or not job.get("candidate_dir")):
        raise IncidentError(f"incident {incident_id}: the job is {job.get('state')}, there is no candidate to attach")
    if not 0.0 <= threshold <= 1.0:
        raise IncidentError("--threshold must be between 0 and 1")
    attachment = None if detach else Attachment(job["candidate_dir"], incident["model"], threshold, incident_id)
    try:
        write_control(control, attachment)
    except OSError as exc:
        raise IncidentError(f"cannot write --control {control}: {exc.strerror}") from None
    if detach:
        store.note(incident_id, "shadow_detached", {"control": str(control)})
        return f"incident {incident_id}: the workers reading {control} stop shadowing at their next batch"
    store.note(incident_id, "shadow_attached", {"control": str(control), "candidate": job["candidate_dir"],
                                                "threshold": threshold})
    return (f"incident {incident_id}: the workers reading {control} score {job['candidate_dir']} beside "
            f"{incident['model']} from their next batch; then: fairwatch incidents shadow {incident_id}")


def record_shadow(store: IncidentStore, incident_id: int, *, prometheus_url: str | None = None,
                  report: str | None = None, min_events: int = DEFAULT_MIN_EVENTS) -> dict:
    """Compare, store the verdict in the incident's job record (``job.shadow``) and its timeline; return it."""
    if min_events < 1:
        raise IncidentError("--min-events must be at least 1")
    incident = store.get(incident_id)
    job = incident["job"]
    if job.get("state") != "succeeded" or not job.get("candidate_dir"):
        raise IncidentError(f"incident {incident_id}: the job is {job.get('state')}, there is no candidate to shadow")
    metrics = firing_metrics(incident)
    if not metrics:
        raise IncidentError(f"incident {incident_id}: no firing alert names a metric, nothing to compare")
    model, attribute = incident["model"], incident["attribute"]
    try:
        if report is not None:
            baseline, candidate, section = shadow_from_report(report, model, attribute)
        else:
            baseline, candidate, section = shadow_from_prometheus(prometheus_url, model, attribute)
    except ShadowEvidenceError as exc:
        raise IncidentError(str(exc)) from None
    scored = section.get("candidate_dir")
    if scored and not _within(Path(scored), Path(job["candidate_dir"])):
        # A shadow of another candidate says nothing about this one.
        raise IncidentError(f"incident {incident_id}: the shadow scored {scored}, not this incident's candidate "
                            f"{job['candidate_dir']}")
    verdict = compare_shadow(baseline, candidate, metrics, min_events)
    verdict.update({"attribute": attribute, "source": report or prometheus_url, "compared_at": time.time(),
                    "candidate_dir": job["candidate_dir"]})
    store.merge_job(incident_id, {"shadow": verdict})
    store.note(incident_id, "shadow_compared", {"passed": verdict["passed"], "summary": live_summary(verdict),
                                                "reasons": verdict["reasons"]})
    return verdict


def _within(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or inside it (the job records its --out folder; the model sits in its model/)."""
    return path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents


def shadow_line(incident_id: int, verdict: dict) -> str:
    """The one line ``incidents shadow`` prints."""
    outcome = "no worse than production" if verdict["passed"] else "refused: " + "; ".join(verdict["reasons"])
    return f"incident {incident_id}: candidate on live traffic: {live_summary(verdict)}: {outcome}"
