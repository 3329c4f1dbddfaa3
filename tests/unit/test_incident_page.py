"""The incident page: content and escaping from a real store, and a headless-Chromium screenshot of its plots."""

from __future__ import annotations

import json
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
WIDTH, HEIGHT = 1200, 2000


def _series(values: list[float], labels: dict) -> list[dict]:
    return [{"labels": labels, "points": [[T0 + 5 * i, v] for i, v in enumerate(values)]}]


def _report() -> dict:
    """A fine-tune report built from the job's own evaluation code on constructed scores."""
    examples = [Example("t", y, {"sex": g}) for g in ("man", "woman") for y in (0, 1) for _ in range(20)]
    biased = np.array([0.9 if (e.groups["sex"] == "man" or e.label) else 0.1 for e in examples])
    # The candidate still errs a little, and a little more on one group: its bars are short, not absent.
    fair = np.array([0.8 if e.label or (i % 20) < (4 if e.groups["sex"] == "man" else 2) else 0.2
                     for i, e in enumerate(examples)])
    before, after = evaluation_summary(examples, biased, ["sex"]), evaluation_summary(examples, fair, ["sex"])
    return {"before": before, "after": after, "config": {"gate_attribute": "*"},
            "decision": {"promote": True, "reasons": [], "gap_before": before["attributes"]["*"]["gaps"]["fped"]["value"],
                         "gap_after": after["attributes"]["*"]["gaps"]["fped"]["value"]},
            "data": {"rows": len(examples)}, "training": {"steps": 10, "history": []}}


@pytest.fixture
def incident_db(tmp_path: Path) -> tuple[Path, int]:
    labels = {"model": "toxicity", "attribute": "sex", "metric": "equalized_odds_difference"}
    rates = [("man", "fpr", 0.7), ("woman", "fpr", 0.05), ("man", "tpr", 0.95), ("woman", "tpr", 0.9),
             ("man", "selection_rate", 0.8), ("woman", "selection_rate", 0.45)]
    rate = lambda v, d: [{"labels": {**labels, "group": g, "metric": m, "window": "all"}, "value": max(0.0, x + d)}  # noqa: E731
                         for g, m, x in rates if v]
    gap = [0.02, 0.05, 0.3, 0.55, 0.62, 0.65]
    evidence = {
        "bound": [{"labels": labels, "value": 0.58}], "threshold": [{"labels": labels, "value": 0.1}],
        "group_rates": rate(True, 0.0), "group_rates_lower": rate(True, -0.04), "group_rates_upper": rate(True, 0.04),
        "series": {"gap": _series(gap, labels), "gap_lower": _series([g - 0.05 for g in gap], labels),
                   "gap_upper": _series([g + 0.05 for g in gap], labels),
                   "bound": _series([0.0, 0.0, 0.12, 0.4, 0.55, 0.58], labels),
                   "threshold": _series([0.1] * len(gap), labels)},
    }
    alert = {"status": "firing", "labels": {"alertname": "FairnessGapBreach", **labels, "severity": "page"},
             "annotations": {"summary": f"gap beyond threshold {HOSTILE}"}, "startsAt": "2026-11-23T01:00:00Z",
             "fingerprint": "abc"}
    store = IncidentStore(tmp_path / "incidents.sqlite")
    incident, created = store.open_or_update("toxicity", "sex", alert, T0 + 30, 3600, evidence=evidence)
    assert created
    store.set_state(incident["id"], "job_running", {"command": ["finetune"]}, job={"state": "running"})
    store.set_state(incident["id"], "job_succeeded", {"returncode": 0, "note": HOSTILE},
                    job={"state": "succeeded", "report": _report()})
    return tmp_path / "incidents.sqlite", incident["id"]


def test_show_html_writes_the_page(incident_db: tuple[Path, int], tmp_path: Path) -> None:
    db, incident_id = incident_db
    page = tmp_path / "incident.html"
    result = run_cli("incidents", "--db", db, "show", incident_id, "--html", page)
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    assert "toxicity / sex" in text and "equalized_odds_difference" in text and "job_succeeded" in text
    # Every plot is there, with data: the gap line, the band, the threshold, bars with whiskers, before/after.
    for plot_id in ("plot-gap", "plot-rates", "plot-finetune", "plot-finetune-groups"):
        svg = re.search(f'<svg id="{plot_id}".*?</svg>', text, re.S)
        assert svg, plot_id
        assert "no values" not in svg.group(0) and "no time series" not in svg.group(0), plot_id
    gap_svg = re.search('<svg id="plot-gap".*?</svg>', text, re.S).group(0)
    assert gap_svg.count("<polyline") == 3 and "<polygon" in gap_svg and THRESHOLD_COLOR in gap_svg
    rates_svg = re.search('<svg id="plot-rates".*?</svg>', text, re.S).group(0)
    assert rates_svg.count("<rect x=") - 1 - 2 == 6  # frame + 2 legend swatches + one bar per (group, rate)
    assert "man fpr: 0.700 [0.660, 0.740]" in rates_svg
    finetune_svg = re.search('<svg id="plot-finetune".*?</svg>', text, re.S).group(0)
    assert "before fped" in finetune_svg and "after (candidate) fped" in finetune_svg
    # Escaped everywhere, and nothing is fetched from elsewhere.
    assert "<script" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in text
    assert not re.search(r'(src|href)\s*=', text) and "<link" not in text and "@import" not in text


def test_page_without_evidence_or_report_still_renders() -> None:
    text = render_incident_html({"id": 3, "model": "m", "attribute": "a", "state": "open", "opened_at": T0,
                                 "updated_at": T0, "alerts": [], "evidence": {}, "job": {"state": "none"},
                                 "timeline": []})
    assert "no time series in the evidence" in text and "no fine-tune report yet" in text
    assert "no group rates in the evidence" in text


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
def test_screenshot_shows_the_plots(incident_db: tuple[Path, int], tmp_path: Path) -> None:
    db, incident_id = incident_db
    page = tmp_path / "incident.html"
    assert run_cli("incidents", "--db", db, "show", incident_id, "--html", page).returncode == 0
    # Where each plot lies: a copy of the page (the page itself has no script) reports the boxes into the DOM.
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", (
        "<script>document.body.insertAdjacentHTML('beforeend', '<pre id=\"boxes\">' + JSON.stringify("
        "[...document.querySelectorAll('svg.plot')].map(s => {const r = s.getBoundingClientRect();"
        " return [s.id, r.left, r.top, r.width, r.height];})) + '</pre>');</script></body>")))
    dom = _run_chromium(["--dump-dom", probe.as_uri()], tmp_path / "profile-dom")
    found = re.findall(r'<pre id="boxes">(\[.*?)</pre>', dom.stdout.decode())  # not the script's own text
    assert found, dom.stderr.decode()[-2000:]
    boxes = {b[0]: b[1:] for b in json.loads(found[-1])}

    shot = tmp_path / "incident.png"
    result = _run_chromium([f"--screenshot={shot}", page.as_uri()], tmp_path / "profile-shot")
    assert shot.is_file(), result.stderr.decode()[-2000:]
    pixels = decode_png(shot.read_bytes())[..., :3].astype(np.int64)
    assert pixels.shape[:2] == (HEIGHT, WIDTH)

    expected = {"plot-gap": (GAP_COLOR, THRESHOLD_COLOR, BOUND_COLOR), "plot-rates": (PALETTE[0], PALETTE[1]),
                "plot-finetune": (BEFORE_COLOR, AFTER_COLOR)}
    for plot_id, colors in expected.items():
        left, top, width, height = (int(round(v)) for v in boxes[plot_id])
        assert top + height <= HEIGHT, f"{plot_id} lies below the screenshot ({boxes[plot_id]})"
        region = pixels[top:top + height, left:left + width]
        non_white = int((region.sum(axis=2) < 3 * 245).sum())
        assert non_white > 0.03 * width * height, f"{plot_id}: only {non_white} non-white pixels"
        drawing = region[: height - 45]  # the legend's swatches at the bottom would pass on their own
        for color in colors:
            hits = int((np.abs(drawing - _hex(color)).max(axis=2) <= 12).sum())
            assert hits >= 30, f"{plot_id}: {hits} pixels of {color}"
    # The rest of the page is not a plot: the header above the first plot shows no plot colour.
    header = pixels[: int(boxes["plot-gap"][1])]
    assert int((np.abs(header - _hex(THRESHOLD_COLOR)).max(axis=2) <= 12).sum()) == 0
