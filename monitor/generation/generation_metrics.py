"""The generation statistics of one model, per (attribute, group), since start and over sliding windows.

The windows are the prediction metrics' (``count_windows``: the last N
generations of the model; ``time_windows_seconds``: generations within that
many seconds of the newest one, the cut-off only moving forward, so an event
older than it on arrival never enters). Events still inside a sliding window
are held, columnar, so that they can be reverted from its statistics when
they leave; at most ``capacity`` are held (the oldest leave every window
early past that, counted in ``truncated_events``), which bounds the memory
as the prediction journal does.

>>> g = GenerationMetrics(count_windows=[2], time_windows_seconds=[])
>>> g.add({"sex": np.array([0, 0, 1])}, np.array([True, False, False]), np.array([-0.5, 0.2, 0.6]),
...       np.array([1.0, 2.0, 3.0]))
>>> g.add({"sex": np.array([1])}, np.array([True]), np.array([0.0]), np.array([4.0]))
>>> [w.name for w in g.windows], g.windows[1].statistics["sex"].refusal.get()[0].tolist()
(['all', 'last_2'], [nan, 0.5])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fairwatch.monitor.generation.mean_sentiment import MeanSentiment
from fairwatch.monitor.generation.negative_share import NegativeShare
from fairwatch.monitor.generation.refusal_rate import RefusalRate
from fairwatch.monitor.generation.sentiment_distance import SentimentHistogram
from fairwatch.monitor.generation.toxic_share import ToxicShare
from fairwatch.monitor.metric_names import GENERATION_RATE_METRICS

__all__ = ["AttributeStatistics", "GenerationMetrics", "GenerationWindow"]

_STATISTICS = ("refusal", "negative", "sentiment", "histogram", "toxic")


@dataclass
class AttributeStatistics:
    """The statistics of one attribute in one window (``toxic``: with a response classifier)."""

    refusal: RefusalRate = field(default_factory=RefusalRate)
    negative: NegativeShare = field(default_factory=NegativeShare)
    sentiment: MeanSentiment = field(default_factory=MeanSentiment)
    histogram: SentimentHistogram = field(default_factory=SentimentHistogram)
    toxic: ToxicShare = field(default_factory=ToxicShare)

    def update(self, codes: np.ndarray, refused: np.ndarray, sentiment: np.ndarray, sign: float = 1.0,
               toxic: np.ndarray | None = None) -> None:
        """``toxic``: 1.0 / 0.0 per response, NaN (or None for all) where no classifier scored it."""
        step = "update" if sign > 0 else "revert"
        getattr(self.refusal, step)(codes, refused)
        for statistic in (self.negative, self.sentiment, self.histogram):
            getattr(statistic, step)(codes, sentiment)
        # Updated even without a classifier (all NaN: nothing scored), so that its table grows with the others.
        getattr(self.toxic, step)(codes, np.full(len(codes), np.nan) if toxic is None else toxic)

    def copy(self, n_groups: int) -> AttributeStatistics:
        """An independent copy, every table grown to ``n_groups`` rows (for snapshots)."""
        out = AttributeStatistics()
        for name in _STATISTICS:
            getattr(out, name).table = getattr(self, name).rows(n_groups).copy()
        return out

    def merge(self, other: AttributeStatistics) -> AttributeStatistics:
        """Add another worker's statistics of the same attribute (same group codes); returns self."""
        for name in _STATISTICS:
            getattr(self, name).merge(getattr(other, name))
        return self

    def regrouped(self, merge_rows) -> tuple[list[str], AttributeStatistics]:
        """Rows summed under new names: ``merge_rows(table)`` maps a table to {name: row} (as the
        exporter's group labels do, folding groups past the cap into ``other``)."""
        out = AttributeStatistics()
        names: list[str] = []
        for name in _STATISTICS:
            merged = merge_rows(getattr(self, name).table)
            names = list(merged)
            getattr(out, name).table = (np.vstack([merged[k] for k in names]) if names
                                        else np.zeros((0, getattr(out, name).width)))
        return names, out

    def responses(self) -> np.ndarray:
        """Responses per group."""
        return self.refusal.counts()[1]

    def rates(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """metric of ``GENERATION_RATE_METRICS`` -> (value, lower, upper) per group."""
        return dict(zip(GENERATION_RATE_METRICS, (self.refusal.get(), self.negative.get(), self.sentiment.get(),
                                                  self.toxic.get())))

    def sentiment_distance(self) -> np.ndarray:
        """Each group's Wasserstein-1 to the rest of the attribute."""
        return self.histogram.get()


class GenerationWindow:
    """One window's statistics per attribute; ``size`` (events) or ``seconds`` bound a sliding one."""

    def __init__(self, name: str, size: int | None = None, seconds: float | None = None) -> None:
        self.name = name
        self.size = size
        self.seconds = seconds
        self.watermark = -math.inf
        self.statistics: dict[str, AttributeStatistics] = {}

    @property
    def slides(self) -> bool:
        return self.size is not None or self.seconds is not None

    def of(self, attribute: str) -> AttributeStatistics:
        stats = self.statistics.get(attribute)
        if stats is None:
            stats = self.statistics[attribute] = AttributeStatistics()
        return stats

    def apply(self, codes: dict[str, np.ndarray], refused, sentiment, mask: np.ndarray | None, sign: float,
              toxic: np.ndarray | None = None) -> None:
        if mask is not None:
            if not mask.any():
                return
            refused, sentiment = refused[mask], sentiment[mask]
            toxic = None if toxic is None else toxic[mask]
        for attribute, column in codes.items():
            self.of(attribute).update(column if mask is None else column[mask], refused, sentiment, sign, toxic)


class GenerationMetrics:
    """Per-group refusal rate, negative share, mean sentiment, sentiment histograms and (with a response
    classifier) toxic share of one model."""

    def __init__(self, count_windows: list[int] = (), time_windows_seconds: list[float] = (),
                 capacity: int = 1_000_000) -> None:
        self.windows = [GenerationWindow("all"),
                        *(GenerationWindow(f"last_{n}", size=n) for n in count_windows),
                        *(GenerationWindow(f"last_{s:g}s", seconds=s) for s in time_windows_seconds)]
        self.capacity = capacity
        self.next_seq = 0
        self.truncated_events = 0
        # The held events (inside at least one sliding window), oldest first.
        self._seq = np.zeros(0, dtype=np.int64)
        self._ts = np.zeros(0)
        self._refused = np.zeros(0, dtype=bool)
        self._sentiment = np.zeros(0)
        self._toxic = np.zeros(0)
        self._codes: dict[str, np.ndarray] = {}
        self._inside: dict[str, np.ndarray] = {w.name: np.zeros(0, dtype=bool) for w in self.windows if w.slides}

    def __setstate__(self, state: dict) -> None:
        """A snapshot written before the toxic share existed: its held events and statistics were not classified."""
        self.__dict__.update(state)
        if "_toxic" not in state:
            self._toxic = np.full(self._seq.size, np.nan)
        for window in self.windows:
            for stats in window.statistics.values():
                if "toxic" not in stats.__dict__:
                    stats.toxic = ToxicShare()

    @property
    def since_start(self) -> GenerationWindow:
        return self.windows[0]

    def snapshot(self, n_groups: dict[str, int]) -> dict[str, dict[str, AttributeStatistics]]:
        """window name -> attribute -> an independent copy of its statistics, for the attributes of
        ``n_groups`` (take under the pipeline lock)."""
        return {window.name: {a: stats.copy(n_groups[a]) for a, stats in window.statistics.items() if a in n_groups}
                for window in self.windows}

    def add(self, codes: dict[str, np.ndarray], refused: np.ndarray, sentiment: np.ndarray, ts: np.ndarray,
            toxic: np.ndarray | None = None) -> None:
        """A batch of scored generations: group codes per attribute (-1: not counted), refused flags,
        compound sentiment, event times, and toxic flags (1.0 / 0.0; NaN or None: not classified)."""
        n = len(ts)
        if n == 0:
            return
        refused = np.asarray(refused, dtype=bool)
        sentiment = np.asarray(sentiment, dtype=np.float64)
        toxic = np.full(n, np.nan) if toxic is None else np.asarray(toxic, dtype=np.float64)
        ts = np.asarray(ts, dtype=np.float64)
        seq = np.arange(self.next_seq, self.next_seq + n)
        self.next_seq += n
        self.since_start.apply(codes, refused, sentiment, None, 1.0, toxic)
        held_codes = self._held_codes(codes, n)
        entering: dict[str, np.ndarray] = {}
        for window in self.windows[1:]:
            if window.size is not None:
                cutoff_seq = self.next_seq - 1 - window.size
                leaving = self._inside[window.name] & (self._seq <= cutoff_seq)
                entering[window.name] = seq > cutoff_seq
            else:
                window.watermark = max(window.watermark, float(ts.max()))
                cutoff = window.watermark - window.seconds
                leaving = self._inside[window.name] & (self._ts <= cutoff)
                entering[window.name] = ts > cutoff
            self._leave(window, leaving)
            window.apply(codes, refused, sentiment, entering[window.name], 1.0, toxic)
        self._hold(seq, ts, refused, sentiment, toxic, held_codes, entering)

    def _held_codes(self, codes: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """Columns for attributes first seen now: held events were not counted for them (-1)."""
        for attribute in codes:
            if attribute not in self._codes:
                self._codes[attribute] = np.full(self._seq.size, -1, dtype=np.int64)
        return {a: np.asarray(codes.get(a, np.full(n, -1)), dtype=np.int64) for a in self._codes}

    def _leave(self, window: GenerationWindow, leaving: np.ndarray) -> None:
        """Revert the held events of ``leaving`` (a mask over the held ones) from ``window``."""
        if leaving.any():
            window.apply(self._codes, self._refused, self._sentiment, leaving, -1.0, self._toxic)
            self._inside[window.name] &= ~leaving

    def _hold(self, seq, ts, refused, sentiment, toxic, new_codes, entering) -> None:
        """Append the batch to the held events and keep only those inside some sliding window, at most
        ``capacity`` of them (an O(held) copy per batch: numpy, and small beside scoring the responses)."""
        if not self._inside:
            return
        inside = {name: np.concatenate([self._inside[name], entering[name]]) for name in self._inside}
        keep = np.logical_or.reduce(list(inside.values()))
        columns = {
            "_seq": np.concatenate([self._seq, seq]), "_ts": np.concatenate([self._ts, ts]),
            "_refused": np.concatenate([self._refused, refused]),
            "_sentiment": np.concatenate([self._sentiment, sentiment]),
            "_toxic": np.concatenate([self._toxic, toxic]),
        }
        held_codes = {a: np.concatenate([c, new_codes[a]]) for a, c in self._codes.items()}
        for name, column in columns.items():
            setattr(self, name, column[keep])
        self._codes = {a: c[keep] for a, c in held_codes.items()}
        self._inside = {name: mask[keep] for name, mask in inside.items()}
        excess = self._seq.size - self.capacity
        if excess > 0:  # the oldest leave every window now: memory stays bounded
            oldest = np.zeros(self._seq.size, dtype=bool)
            oldest[:excess] = True
            for window in self.windows[1:]:
                self._leave(window, self._inside[window.name] & oldest)
            self.truncated_events += excess
            for name in columns:
                setattr(self, name, getattr(self, name)[excess:])
            self._codes = {a: c[excess:] for a, c in self._codes.items()}
            self._inside = {name: mask[excess:] for name, mask in self._inside.items()}
