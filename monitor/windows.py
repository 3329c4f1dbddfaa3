"""Which held events each window covers, and the count rows they add up to.

A window keeps one count row block per attribute. Events enter when they are
appended and leave by subtracting their own contribution, read back from the
journal, so every window stays exactly equal to a batch recount of its
members (a property test checks this). Why not River's rolling wrappers:
they roll one statistic per object, while here a single eviction must update
every group, cell and attribute at once, in numpy.
"""

from __future__ import annotations

import math

import numpy as np

from fairwatch.monitor.counts import N_CELLS, contributions, padded
from fairwatch.monitor.journal import Journal


class Window:
    """Base: since start, nothing ever leaves."""

    name = "all"

    def __init__(self) -> None:
        self.counts: dict[str, np.ndarray] = {}
        self.truncated_events = 0  # members dropped because the journal was full

    # -- membership ------------------------------------------------------
    def members(self, seqs: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
        """Mask of the given held events inside the window; None means all."""
        return None

    def advance(self, journal: Journal, n_new: int, new_ts_max: float) -> None:
        """Subtract the events that leave once ``n_new`` events with times up to
        ``new_ts_max`` are appended (called before the journal overwrites)."""

    # -- counts ------------------------------------------------------------
    def rows(self, attribute: str, n_groups: int) -> np.ndarray:
        rows = self.counts.get(attribute)
        if rows is None or rows.shape[0] < n_groups:
            rows = self.counts[attribute] = padded(
                rows if rows is not None else np.zeros((0, N_CELLS)), n_groups
            )
        return rows

    def add(self, attribute: str, delta: np.ndarray) -> None:
        rows = self.rows(attribute, delta.shape[0])
        rows[: delta.shape[0]] += delta

    def subtract_held(self, journal: Journal, seqs: np.ndarray) -> None:
        if seqs.size == 0:
            return
        pos, prediction, label, score, _ = journal.columns(seqs)
        for attribute, column in journal.codes.items():
            rows = self.counts.get(attribute)
            if rows is None:
                continue
            rows -= contributions(column[pos], prediction, label, score, rows.shape[0])


class CountWindow(Window):
    """The last ``size`` predictions appended."""

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError("a count window needs at least one event")
        self.size = size
        self.name = f"last_{size}"
        self._newest_seq = -1

    def members(self, seqs, ts):
        return seqs > self._newest_seq - self.size

    def advance(self, journal, n_new, new_ts_max):
        new_newest = journal.next_seq - 1 + n_new
        first_out = max(journal.next_seq - self.size, 0)
        last_out = min(new_newest - self.size, journal.next_seq - 1)
        if last_out >= first_out:
            self.subtract_held(journal, np.arange(first_out, last_out + 1))
        self._newest_seq = new_newest


class TimeWindow(Window):
    """Predictions whose event time is within ``seconds`` of the newest one.

    The cut-off only moves forward, so an event older than it on arrival
    (out of order) never enters, and one that leaves never comes back.
    Held members are kept in chunks of consecutive sequence numbers with the
    least event time inside the window: a batch reads back only the chunks
    that can lose a member (their least time has passed the cut-off, or the
    journal is about to overwrite them), not the whole window, whatever the
    order of event times.
    """

    CHUNK = 4096  # a new batch joins the newest chunk while that holds fewer sequence numbers than this

    def __init__(self, seconds: float) -> None:
        super().__init__()
        if not seconds > 0:
            raise ValueError("a time window needs a positive length")
        self.seconds = seconds
        self.name = f"last_{seconds:g}s"
        self.watermark = -math.inf
        self._chunks: list[list] = []  # [first seq, end seq, least member time], oldest first
        self._covered = 0  # sequence numbers below this are in a chunk or have left

    def __setstate__(self, state: dict) -> None:
        if "_tail_seq" in state:  # a snapshot from before the chunks: cover what it had not seen leave
            state["_chunks"], state["_covered"] = [], state.pop("_tail_seq")
        self.__dict__.update(state)

    @property
    def cutoff(self) -> float:
        return self.watermark - self.seconds

    def members(self, seqs, ts):
        return ts > self.cutoff

    def _cover(self, journal: Journal) -> None:
        """Put the events appended since the last call (those still members) in the newest chunk."""
        start = max(self._covered, journal.oldest_seq)
        self._covered = journal.next_seq
        if start >= journal.next_seq:
            return
        ts = journal.ts[journal.positions(np.arange(start, journal.next_seq))]
        members = ts[ts > self.cutoff]
        if members.size == 0:
            return
        least = float(members.min())
        last = self._chunks[-1] if self._chunks else None
        if last is not None and last[1] == start and last[1] - last[0] < self.CHUNK:
            last[1], last[2] = journal.next_seq, min(last[2], least)
        else:
            self._chunks.append([start, journal.next_seq, least])

    def advance(self, journal, n_new, new_ts_max):
        self._cover(journal)
        old_cutoff = self.cutoff
        self.watermark = max(self.watermark, new_ts_max)
        new_cutoff = self.cutoff
        # Events about to be overwritten must leave now, cut-off or not.
        new_oldest = max(0, journal.next_seq + n_new - journal.capacity)
        leaving_parts, kept = [], []
        for chunk in self._chunks:
            first, end, least = chunk
            if least > new_cutoff and first >= new_oldest:  # no member of it can leave now
                kept.append(chunk)
                continue
            seqs = np.arange(max(first, journal.oldest_seq), end)
            ts = journal.ts[journal.positions(seqs)]
            inside = ts > old_cutoff
            overwritten = seqs < new_oldest
            leaving = inside & ((ts <= new_cutoff) | overwritten)
            self.truncated_events += int((inside & overwritten & (ts > new_cutoff)).sum())
            leaving_parts.append(seqs[leaving])
            alive = (ts > new_cutoff) & ~overwritten
            if alive.any():
                kept.append([int(seqs[np.argmax(alive)]), end, float(ts[alive].min())])
        self._chunks = kept
        if leaving_parts:
            self.subtract_held(journal, np.concatenate(leaving_parts))


def make_windows(count_sizes: list[int], time_seconds: list[float]) -> list[Window]:
    return [Window(), *(CountWindow(n) for n in count_sizes), *(TimeWindow(s) for s in time_seconds)]
