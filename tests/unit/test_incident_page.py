"""The incident page: content and escaping from a real store, and a headless-Chromium screenshot of its plots."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from fairwatch.alerts.finetune import Example, evaluation_summary
from fairwatch.alerts.incident_page import (AFTER_COLOR, BEFORE_COLOR, BOUND_COLOR, GAP_COLOR, PALETTE, THRESHOLD_COLOR,
                                  render_incident_html)
from fairwatch.alerts.incidents import IncidentStore

T0 = 1_795_000_000.0
HOSTILE = '<script>alert("x")</script>&'
WIDTH, HEIGHT = 1280, 3400


METRICS = {  # metric: (gap values, bound values, threshold): a difference that grows, a ratio that falls
    "equalized_odds_difference": ([0.02, 0.05, 0.3, 0.55, 0.62, 0.65], [0.0, 0.0, 0.12, 0.4, 0.55, 0.58], 0.1),
    "demographic_parity_difference": ([0.01, 0.1, 0.2, 0.3, 0.33, 0.35], [0.0, 0.0, 0.05, 0.15, 0.2, 0.22], 0.1),
    "demographic_parity_ratio": ([0.98, 0.9, 0.75, 0.6, 0.58, 0.56], [1.0, 1.0, 0.95, 0.85, 0.7, 0.66], 0.8),
}
SCOPE = {"model": "toxicity", "attribute": "sex"}


def _series(values: list[float], labels: dict) -> dict:
    return {"labels": labels, "points": [[T0 + 5 * i, v] for i, v in enumerate(values)]}


def _report(promote: bool = True) -> dict:
    """A fine-tune report built from the job's own evaluation code on constructed scores."""
    examples = [Example("t", y, {"sex": g}) for g in ("man", "woman") for y in (0, 1) for _ in range(20)]
    biased = np.array([0.9 if (e.groups["sex"] == "man" or e.label) else 0.1 for e in examples])
    # The candidate still errs a little, and a little more on one group: its bars are short, not absent.
    fair = np.array([0.8 if e.label or (i % 20) < (4 if e.groups["sex"] == "man" else 2) else 0.2
                     for i, e in enumerate(examples)])
    before, after = evaluation_summary(examples, biased, ["sex"]), evaluation_summary(examples, fair, ["sex"])
    return {"before": before, "after": after, "config": {"gate_attribute": "*"},
            "decision": {"promote": promote, "reasons": [] if promote else ["accuracy dropped 0.050 > 0.020"],
                         "gap_before": before["attributes"]["*"]["gaps"]["fped"]["value"],
                         "gap_after": after["attributes"]["*"]["gaps"]["fped"]["value"]},
            "data": {"rows": len(examples), "groups": {"man": 40, "woman": 40}},
            "training": {"steps": 10, "stopped": "early", "history": [{"step": 1, "loss": 0.5}]}}


def _evidence() -> dict:
    rates = [("man", "fpr", 0.7), ("woman", "fpr", 0.05), ("man", "tpr", 0.95), ("woman", "tpr", 0.9),
             ("man", "selection_rate", 0.8), ("woman", "selection_rate", 0.45)]
    rate = lambda d: [{"labels": {**SCOPE, "group": g, "metric": m, "window": "all"}, "value": max(0.0, x + d)}  # noqa: E731
                      for g, m, x in rates]
    series: dict = {key: [] for key in ("gap", "gap_lower", "gap_upper", "bound", "threshold")}
    for metric, (gap, bound, tau) in METRICS.items():
        labels = {**SCOPE, "metric": metric}
        series["gap"].append(_series(gap, labels))
        series["gap_lower"].append(_series([g - 0.05 for g in gap], labels))
        series["gap_upper"].append(_series([g + 0.05 for g in gap], labels))
        series["bound"].append(_series(bound, labels))
        series["threshold"].append(_series([tau] * len(gap), labels))
    # Predictions per group, a counter: man gets 100 per step after the breach starts.
    series["group_predictions"] = [_series([0, 100, 200, 300, 400, 500], {"group": "man"}),
                                   _series([0, 50, 100, 150, 200, 250], {"group": "woman"})]
    return {
        "bound": [{"labels": {**SCOPE, "metric": m}, "value": b[-1]} for m, (_, b, _) in METRICS.items()],
        "threshold": [{"labels": {**SCOPE, "metric": m}, "value": t} for m, (_, _, t) in METRICS.items()],
        "group_rates": rate(0.0), "group_rates_lower": rate(-0.04), "group_rates_upper": rate(0.04),
        "series": series, "source": {"prometheus_url": "http://prometheus:9090"},
        "exemplars": [{"group": "man", "event_ids": ["evt-0001", "evt-0002"]}, {"group": "woman", "event_ids": ["evt-0107"]}],
    }


def _alert(metric: str, summary: str = "gap beyond threshold") -> dict:
    return {"status": "firing", "labels": {"alertname": "FairnessGapBreach", **SCOPE, "metric": metric,
                                           "severity": "page"},
            "annotations": {"summary": summary}, "startsAt": "2026-11-23T01:00:00Z", "fingerprint": metric}


def _store(path: Path, evidence: dict, promote: bool = False) -> int:
    store = IncidentStore(path)
    metrics = list(METRICS)
    incident, created = store.open_or_update("toxicity", "sex", _alert(metrics[0], f"gap beyond threshold {HOSTILE}"),
                                             T0 + 30, 3600, evidence=evidence)
    assert created
    for metric in metrics[1:]:  # later alerts of the same breach join the incident
        store.open_or_update("toxicity", "sex", _alert(metric), T0 + 40, 3600)
    store.set_state(incident["id"], "job_running", {"command": ["finetune"]}, job={"state": "running"})
    store.set_state(incident["id"], "job_succeeded", {"returncode": 0, "note": HOSTILE},
                    job={"state": "succeeded", "report": _report(promote)})
    return incident["id"]


@pytest.fixture
def incident_db(tmp_path: Path) -> tuple[Path, int]:
    """Three firing metrics, full evidence, a job that succeeded and whose candidate the gates refused."""
    return tmp_path / "incidents.sqlite", _store(tmp_path / "incidents.sqlite", _evidence())


HEADLINE = ("toxicity: equalized_odds_difference on sex is 0.480 beyond its threshold (anytime-valid bound 0.580 "
            "above threshold 0.100) since 2026-11-18 11:06:50Z; harmed group: man (false positive rate 0.700 vs "
            "0.050 for woman); about 300 predictions for man since then.")


def _svg(text: str, plot_id: str) -> str:
    found = re.search(f'<svg id="{plot_id}".*?</svg>', text, re.S)
    assert found, plot_id
    return found.group(0)


def test_show_html_writes_the_page(incident_db: tuple[Path, int], tmp_path: Path) -> None:
    db, incident_id = incident_db
    page = tmp_path / "incident.html"
    result = run_cli("incidents", "--db", db, "show", incident_id, "--html", page)
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    # The first thing on the page: the worst metric's sentence (largest excess), then the others.
    body = text.split("<body>", 1)[1]
    first = re.search(r'<p class="headline">(.*?)</p>', body).group(1)
    assert html.unescape(first) == HEADLINE
    assert body.index('class="headline"') < body.index("<table")
    assert "demographic_parity_ratio on sex is 0.140 beyond its threshold (anytime-valid bound 0.660 below " \
           "threshold 0.800)" in text
    assert "lowest selection rate: woman (selection rate 0.450 vs 0.800 for man)" in text
    # Every firing metric has its own plot with data: gap line, bound, threshold and band.
    for index in range(3):
        svg = _svg(text, f"plot-gap-{index}")
        assert svg.count("<polyline") == 3 and "<polygon" in svg and THRESHOLD_COLOR in svg, index
    assert "no series" not in text and "no values" not in text
    rates_svg = _svg(text, "plot-rates")
    assert rates_svg.count("<rect x=") - 1 - 2 == 6  # frame + 2 legend swatches + one bar per (group, rate)
    assert "man fpr: 0.700 [0.660, 0.740]" in rates_svg
    finetune_svg = _svg(text, "plot-finetune")
    assert "before fped" in finetune_svg and "after (candidate) fped" in finetune_svg
    # Exemplar ids in a table, not only inside the collapsed evidence JSON.
    visible = text.split("<details>", 1)[0]
    assert "evt-0001, evt-0002" in visible and "evt-0107" in visible
    # Links: the alert's annotations are absent here, so the defaults (README runbook anchor, model dashboard).
    assert 'href="https://github.com/fairwatch/fairwatch/blob/main/docs/runbook.md#runbook-fairnessgapbreach"' in text
    assert 'href="http://localhost:3000/d/fairwatch-model?var-model=toxicity&amp;var-attribute=sex"' in text
    # The job succeeded (green) and the gates refused the candidate (amber): never a red failure.
    assert '<span class="badge good">job succeeded</span>' in text
    assert '<span class="badge warn">promotion refused by the gates</span>' in text
    assert 'class="badge bad"' not in text
    # Readable tables: headers never wrap, no cell holds raw JSON.
    assert re.search(r"th \{[^}]*white-space: nowrap", text)
    cells = re.findall(r"<td>(.*?)</td>", visible, re.S)
    assert cells and not [c for c in cells if c.lstrip().startswith(("{", "[", "&quot;{"))]
    # Escaped everywhere, and nothing is fetched from elsewhere (links are not fetched).
    assert "<script" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in text
    assert not re.search(r'src\s*=', text) and "<link" not in text and "@import" not in text
    assert set(re.findall(r'href="(\w+):', text)) == {"https", "http"}


def test_base_urls_from_the_command_line(incident_db: tuple[Path, int], tmp_path: Path) -> None:
    db, incident_id = incident_db
    page = tmp_path / "incident.html"
    result = run_cli("incidents", "--db", db, "show", incident_id, "--html", page,
                     "--runbook-url", "https://wiki.example/fairwatch", "--dashboard-url", "https://g.example/d/m")
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    assert 'href="https://wiki.example/fairwatch#runbook-fairnessgapbreach"' in text
    assert 'href="https://g.example/d/m?var-model=toxicity&amp;var-attribute=sex"' in text


def test_links_the_trigger_stored_and_unsafe_schemes() -> None:
    incident = {"id": 1, "model": "m", "attribute": "a", "alerts": [],
                "evidence": {"links": {"runbook_url": "https://rb.example/x", "dashboard_url": "javascript:alert(1)"}}}
    text = render_incident_html(incident)
    hrefs = re.findall(r'href="([^"]*)"', text)
    assert hrefs == ["https://rb.example/x#runbook-fairnessgapbreach", "#"]  # a javascript: URL is no link


def test_promoted_candidate_is_green_and_failed_job_is_red(tmp_path: Path) -> None:
    store = IncidentStore(tmp_path / "i.sqlite")
    incident_id = _store(tmp_path / "i.sqlite", _evidence(), promote=True)
    text = render_incident_html(store.get(incident_id))
    assert '<span class="badge good">promotion: the gates recommend the candidate</span>' in text
    store.set_state(incident_id, "job_failed", {"error": "x"}, job={"state": "failed"})
    text = render_incident_html({**store.get(incident_id), "job": {"state": "failed"}})
    assert '<span class="badge bad">job failed</span>' in text and "promotion: no verdict yet" in text


@pytest.mark.parametrize("evidence, says", [
    ({"not_gathered": "the trigger runs without --prometheus-url"},
     "the trigger runs without --prometheus-url. Next: restart `fairwatch trigger serve` with --prometheus-url"),
    ({"group_rates": {"error": "URLError: connection refused"}, "exemplars": {"error": "URLError: refused"},
      "series": {k: {"error": "URLError: connection refused"} for k in ("gap", "bound", "threshold")},
      "source": {"prometheus_url": "http://prom:9090"}},
     "Prometheus at http://prom:9090 did not answer when the incident opened (URLError: connection refused). "
     "Next: check that Prometheus is up"),
    ({"group_rates": [], "exemplars": [], "series": {"gap": [], "bound": [], "threshold": []},
      "source": {"prometheus_url": "http://prom:9090"}},
     "Prometheus answered but held no series for this model and attribute. Next: check that Prometheus scrapes"),
    ({}, "No evidence was stored with this incident"),
])
def test_missing_evidence_says_why_and_what_next(evidence: dict, says: str) -> None:
    text = render_incident_html({"id": 3, "model": "m", "attribute": "a", "state": "open", "opened_at": T0,
                                 "updated_at": T0, "alerts": [_alert("demographic_parity_difference")],
                                 "evidence": evidence, "job": {"state": "none"}, "timeline": []})
    missing = [html.unescape(m) for m in re.findall(r'<p class="missing">(.*?)</p>', text, re.S)]
    assert len(missing) >= 3 and all(says in m for m in missing[:2]), missing  # gap plot and rates
    assert "no time series in the evidence" not in text and "no fine-tune report yet" in text
    headline = html.unescape(re.search(r'<p class="headline">(.*?)</p>', text).group(1))
    assert "bound and threshold unknown" in headline and "harmed group unknown" in headline
    assert "predictions affected unknown" in headline and "since 2026-11-23 01:00:00Z (alert start" in headline


def test_the_ablation_of_the_report_is_a_table() -> None:
    report = _report()
    gap = lambda v: {"value": v, "lower": v - 0.1, "upper": v + 0.1}  # noqa: E731
    report["ablation"] = {"attribute": "*", "before": {"accuracy": 0.75, "accuracy_interval": [0.6, 0.85],
                                                       "gate_gap": 1.0, "gaps": {"fped": gap(1.0)}},
                          "plain": {"accuracy": 0.9, "accuracy_interval": [0.8, 0.95], "gate_gap": 0.4,
                                    "gaps": {"fped": gap(0.4)}, "promote": False},
                          "full": {"accuracy": 0.88, "accuracy_interval": [0.78, 0.94], "gate_gap": 0.1,
                                   "gaps": {"fped": gap(0.1)}, "promote": True}}
    text = render_incident_html({"id": 1, "model": "m", "attribute": "a", "alerts": [], "evidence": {},
                                 "job": {"state": "succeeded", "report": report}, "timeline": []})
    table = text.split("Ablation on held-out data (*)", 1)[1].split("</table>", 1)[0]
    assert "<td>plain fine-tuning</td><td>0.900 [0.800, 0.950]</td><td>0.400</td><td>0.400 [0.300, 0.500]</td>" in table
    assert "<td>full recipe</td><td>0.880 [0.780, 0.940]</td><td>0.100</td>" in table and "<td>yes</td>" in table


def test_show_html_to_unwritable_path_is_one_line(incident_db: tuple[Path, int], tmp_path: Path) -> None:
    db, incident_id = incident_db
    result = run_cli("incidents", "--db", db, "show", incident_id, "--html", tmp_path / "no" / "such" / "x.html")
    assert result.returncode == 2 and "cannot write --html" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# --------------------------------------------------------------------------- screenshot in headless Chromium

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--force-device-scale-factor=1", "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}")


def decode_png(data: bytes) -> np.ndarray:
    """RGB(A) pixels of an 8-bit, non-interlaced PNG, as (height, width, channels) uint8.

    Pillow would do this, but it is no dependency of fairwatch; this reads
    what Chromium writes (colour types 2 and 6) and nothing more.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG {header}"
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for row in range(height):
        start = row * (stride + 1)
        kind = raw[start]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=start + 1).astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum per channel
            cur = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:
            cur = (line + prev) % 256
        else:  # Average and Paeth depend on the byte just decoded: plain Python per byte
            cur_list, above, filt = [0] * stride, prev.tolist(), line.tolist()
            for i in range(stride):
                left = cur_list[i - bpp] if i >= bpp else 0
                if kind == 3:
                    cur_list[i] = (filt[i] + ((left + above[i]) >> 1)) & 255
                else:
                    upper_left = above[i - bpp] if i >= bpp else 0
                    p = left + above[i] - upper_left
                    pa, pb, pc = abs(p - left), abs(p - above[i]), abs(p - upper_left)
                    pred = left if pa <= pb and pa <= pc else (above[i] if pb <= pc else upper_left)
                    cur_list[i] = (filt[i] + pred) & 255
            cur = np.array(cur_list, dtype=np.int64)
        out[row] = cur
        prev = cur
    return out.reshape(height, width, bpp)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not installed (`make test` installs Debian's chromium)")
    return path


def _run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, timeout=120)


def _hex(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])


@pytest.mark.slow
def test_screenshot_shows_the_headline_and_the_plots(incident_db: tuple[Path, int], tmp_path: Path) -> None:
    """At 1280 px wide: the headline on top, then every firing metric's plot, the rates and the fine-tune.

    FAIRWATCH_SCREENSHOT_DIR=DIR keeps the PNG there, for a human to look at.
    """
    db, incident_id = incident_db
    page = tmp_path / "incident.html"
    assert run_cli("incidents", "--db", db, "show", incident_id, "--html", page).returncode == 0
    assert HEADLINE in html.unescape(page.read_text())
    # Where each element lies: a copy of the page (the page itself has no script) reports the boxes into the DOM.
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", (
        "<script>document.body.insertAdjacentHTML('beforeend', '<pre id=\"boxes\">' + JSON.stringify("
        "[...document.querySelectorAll('svg.plot, p.headline')].map((s, i) => {const r = s.getBoundingClientRect();"
        " return [s.id || 'headline-' + i, r.left, r.top, r.width, r.height];})) + '</pre>');</script></body>")))
    dom = _run_chromium(["--dump-dom", probe.as_uri()], tmp_path / "profile-dom")
    found = re.findall(r'<pre id="boxes">(\[.*?)</pre>', dom.stdout.decode())  # not the script's own text
    assert found, dom.stderr.decode()[-2000:]
    boxes = {b[0]: b[1:] for b in json.loads(found[-1])}

    shot = tmp_path / "incident.png"
    result = _run_chromium([f"--screenshot={shot}", page.as_uri()], tmp_path / "profile-shot")
    assert shot.is_file(), result.stderr.decode()[-2000:]
    if os.environ.get("FAIRWATCH_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["FAIRWATCH_SCREENSHOT_DIR"]) / "incident.png")
    pixels = decode_png(shot.read_bytes())[..., :3].astype(np.int64)
    assert pixels.shape[:2] == (HEIGHT, WIDTH)

    # The headline is the first block under the title, fully on screen and wide.
    headline = boxes["headline-0"]
    assert headline[1] < 120 and headline[2] > 900, headline
    assert all(headline[1] < box[1] for key, box in boxes.items() if key.startswith("plot-"))

    expected = {**{f"plot-gap-{i}": (GAP_COLOR, THRESHOLD_COLOR, BOUND_COLOR) for i in range(3)},
                "plot-rates": (PALETTE[0], PALETTE[1]), "plot-finetune": (BEFORE_COLOR, AFTER_COLOR)}
    for plot_id, colors in expected.items():
        left, top, width, height = (int(round(v)) for v in boxes[plot_id])
        assert left + width <= WIDTH, f"{plot_id} is wider than the window ({boxes[plot_id]})"
        assert top + height <= HEIGHT, f"{plot_id} lies below the screenshot ({boxes[plot_id]})"
        region = pixels[top:top + height, left:left + width]
        non_white = int((region.sum(axis=2) < 3 * 245).sum())
        assert non_white > 0.03 * width * height, f"{plot_id}: only {non_white} non-white pixels"
        drawing = region[: height - 45]  # the legend's swatches at the bottom would pass on their own
        for color in colors:
            hits = int((np.abs(drawing - _hex(color)).max(axis=2) <= 12).sum())
            assert hits >= 30, f"{plot_id}: {hits} pixels of {color}"
    # The rest of the page is not a plot: the header above the first plot shows no plot colour.
    header = pixels[: int(boxes["plot-gap-0"][1])]
    assert int((np.abs(header - _hex(THRESHOLD_COLOR)).max(axis=2) <= 12).sum()) == 0
