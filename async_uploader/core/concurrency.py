"""How many part requests to keep in flight, learned from the throughput they reach: pure arithmetic, no clock.

The right number depends on where the upload runs. A distant service caps each connection, so every request
added adds throughput until the account's quota or the link is full; on a machine whose cores the store (or
anything else) also needs, requests added past a handful only add contention, and throughput falls. The tuner
finds the knee the way TCP's slow start does, with bytes per second as the signal:

- it starts at ``start`` and measures each level's throughput over ``span`` consecutive windows of ``window``
  seconds (one window alone is noise), comparing it with the level before. The first ``warmup`` windows after
  the start and after every change are not counted: a new connection first fills the buffers on its way (the
  kernel's socket buffers, a proxy's or terminator's), tens of MB each taken at once, which would count as
  throughput of the level that opened it. Counted, they made a capped link's first doubling look worthless
  against its inflated start, and the tuner halved where every request added its share. A doubling that
  brought at least ``grow`` times the throughput is doubled again; one that brought ``leap`` times (each request
  adding about its own share: capped connections) is multiplied by four; one that brought less is undone, and
  the tuner holds the lower level. When already the first doubling brings nothing (the machine, not the
  distance, is the limit), it halves instead, while throughput stays within ``keep`` of the level above: fewer
  requests for the same bytes leave more CPU to everything else;
- a window is judged only when the limit held the requests back (a part waited for a slot): when fewer parts
  are ready than slots (the last parts, a slow pipe), throughput says nothing about the limit, and the limit
  stays where it is;
- holding, it probes again every ``probe_every`` seconds (one step of a quarter more), so a link that frees up
  or a store that gets busy is followed; it never goes above ``maximum`` or below ``minimum``;
- where a nearby store's cores are the limit from the start, it goes down first: when the cores the process may
  run on were busy at least ``saturated`` of the time over the first level's judged windows, the first judgement
  halves instead of doubling, and the halving goes on while throughput stays within ``keep``. At 1 / ``grow``
  busy (the default), a doubling could bring ``grow`` times the bytes only by taking the cores from other work:
  the store's, a terminator's, a pipeline's. Requests added on saturated cores bring no bytes, only more work per
  connection, and trying them first cost a short upload a tenth of its time (2 x 1 GiB through stunnel on two
  cores: 1.10x TransferManager's wall speed doubling first, 1.21x halving first). A distant store's first level
  (below) climbs regardless: there each connection is held to its window per round trip, and busy cores still
  gave more bytes to more requests (2 x 1 GiB under the service's quota through stunnel, 25 MB/s per connection:
  going down first from 16 took the upload from 1.70x TransferManager's speed to 1.38x). ``busy`` comes with each
  window, None where the platform does not say (the tuning then goes by throughput alone);
- going down frees the cores only for other work: when the process itself took nearly all of the busy time
  (``own``, the share of the cores' time this process used; other work took less than ``shared``), the cores
  are its own limit, as under a CPU quota that holds the uploader alone, and the first judgement holds the start
  level instead (the probes still try more every ``probe_every`` seconds). Fewer requests there free nothing for
  anyone: in a cgroup of half a CPU holding the uploader alone, the halving cost bytes and the tuner came back up
  half a second later (the time of 2 x 1 GiB was within the noise either way);
- a distant store starts higher: when the quickest small request answered before the first part
  (``round_trip``) took ``distant_round_trip`` or more, the first level is ``distant_start``. Far away, each
  connection moves at most its window per round trip, so it takes more of them to fill a link, and the cores are
  seldom what limits; the climb from a nearby store's start would cost a second of a short upload. The rest of
  the tuning is unchanged (a first doubling that brings nothing still goes down).

``ConcurrencyTuner.observe(now, sent, limited, busy, own)`` takes the clock, the bytes sent so far, whether the
limit held requests back, how busy the cores were and how much of that was this process; it returns the limit to
hold from now on. ``engine.slots`` feeds it, ``edge.cores`` measures the cores.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["ConcurrencyTuner", "Phase"]


class Phase(enum.Enum):
    STARTING = "starting"
    """Doubling from ``start`` while throughput follows."""
    HOLDING = "holding"
    """At the level the last probe kept."""
    PROBING = "probing"
    """One step above the held level, to see whether it brings more."""
    DESCENDING = "descending"
    """Halving below ``start``, since the first doubling brought nothing, while throughput holds."""


@dataclass(frozen=True)
class _Window:
    began: float
    sent: int


@dataclass
class _Span:
    """Consecutive judged windows at one limit: their rate is the level's."""

    began: float
    sent: int
    windows: int = 0
    busy: float | None = 0.0
    """The cores' busy shares of the windows summed; None once one window's is unknown."""
    own: float | None = 0.0
    """This process's shares of the cores' time, summed likewise."""


@dataclass
class ConcurrencyTuner:
    """The limit on requests in flight, grown while throughput rises (``observe``); ``limit`` is the current one."""

    maximum: int
    start: int = 8
    minimum: int = 1
    window: float = 0.1
    span: int = 3
    warmup: int = 2
    grow: float = 1.25
    leap: float = 1.8
    keep: float = 0.97
    saturated: float = 0.8
    shared: float = 0.2
    probe_gain: float = 1.08
    probe_every: float = 2.0
    distant_start: int = 16
    distant_round_trip: float = 0.010
    limit: int = field(init=False)
    phase: Phase = field(init=False, default=Phase.STARTING)
    changes: int = field(init=False, default=0)
    """How often the limit moved (for statistics)."""
    busy: float | None = field(init=False, default=None)
    """The cores' busy share over the last judged span; None before one, or where unknown (for statistics)."""
    own: float | None = field(init=False, default=None)
    """This process's share of the cores' time over the last judged span; None likewise."""
    _current: _Window | None = field(init=False, default=None)
    _span: _Span | None = field(init=False, default=None)
    _baseline: float | None = field(init=False, default=None)
    """Bytes per second at ``_below``, the level before the one being judged."""
    _below: int = field(init=False, default=0)
    _held: int = field(init=False, default=0)
    _first: int = field(init=False, default=0)
    """The level it started at."""
    _held_since: float = field(init=False, default=0.0)
    _settling: int = field(init=False, default=0)
    """Windows still to pass uncounted since the start or the last change."""
    _round_trip: float | None = field(init=False, default=None)
    """The quickest small request's answer seen before the first window."""
    _distant: bool = field(init=False, default=False)
    """Whether it started at ``distant_start``."""

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        self.limit = max(self.minimum, min(self.start, self.maximum))
        self._held = self._first = self.limit
        self._settling = self.warmup

    def observe(self, now: float, sent: int, limited: bool, busy: float | None = None, own: float | None = None) -> int:
        """Told the time, the bytes sent so far, whether the limit held requests back in the window that ends now
        (a part waited for a slot), the share of that window the cores were busy and the share this process used
        (0 to 1, None if unknown); the first call starts the first window. A call before ``window`` seconds have
        passed changes nothing."""
        window = self._current
        if window is None:
            self._current = _Window(now, sent)
            if self._round_trip is not None and self._round_trip >= self.distant_round_trip:
                self._set(max(self.limit, self.distant_start))
                self._held = self._first = self.limit
                self._distant = True
            return self.limit
        if now - window.began < self.window:
            return self.limit
        self._current = _Window(now, sent)
        if self._settling > 0:  # the buffers of the level's new connections are filling
            self._settling -= 1
            self._span = None
            return self.limit
        if not limited:
            self._span = None  # consecutive windows only
            if self.phase is Phase.PROBING:  # the probe ran out of parts to show anything: back to what was held
                self._hold(now, self._held)
            return self.limit
        span = self._span = self._span or _Span(window.began, window.sent)
        span.windows += 1
        span.busy = None if span.busy is None or busy is None else span.busy + busy
        span.own = None if span.own is None or own is None else span.own + own
        if span.windows >= self.span:  # one window alone is noise (a new connection fills its socket buffers)
            self._span = None
            self.busy = None if span.busy is None else span.busy / span.windows
            self.own = None if span.own is None else span.own / span.windows
            self._judge(now, (sent - span.sent) / (now - span.began))
        return self.limit

    def round_trip(self, seconds: float) -> None:
        """How long a small request (no part body) took to be answered; before the first part, the quickest of
        them decides whether the store is distant (see the module's notes)."""
        if self._current is None and seconds >= 0:
            self._round_trip = seconds if self._round_trip is None else min(self._round_trip, seconds)

    def _judge(self, now: float, rate: float) -> None:
        baseline = self._baseline
        if self.phase is Phase.HOLDING:
            self._judge_held(now, rate, baseline)
        elif self.phase is Phase.PROBING and baseline is not None:
            self._judge_probe(now, rate, baseline)
        elif self.phase is Phase.DESCENDING and baseline is not None:
            self._descend(now, rate, baseline)
        elif baseline is None and self._saturated() and not self._shared():  # our own work is the limit
            self._baseline = rate
            self._hold(now, self.limit)
        elif baseline is None and self._saturated() and self.limit > self.minimum:  # the cores are the limit
            self._baseline, self._below = rate, self.limit
            self.phase = Phase.DESCENDING
            self._set(self.limit // 2)
        elif baseline is None or self.limit == self._below:  # a level to compare the next one with
            self._raise(rate, 2)
            if self.limit == self._below:  # at the maximum already
                self._hold(now, self.limit)
        else:
            self._climb(now, rate, baseline)

    def _saturated(self) -> bool:
        """Whether a nearby store's first level found the cores busy (a distant store's climbs regardless)."""
        return not self._distant and self.busy is not None and self.busy >= self.saturated

    def _shared(self) -> bool:
        """Whether other work took at least ``shared`` of the cores' time (assumed where this process's share is
        unknown: the rule as it was before the share was measured)."""
        return self.own is None or self.busy is None or self.busy - self.own >= self.shared

    def _judge_held(self, now: float, rate: float, baseline: float | None) -> None:
        """Holding a level: follow its rate, and probe one a quarter higher every ``probe_every`` seconds."""
        self._baseline = rate if baseline is None else max(rate, 0.5 * (baseline + rate))
        if now - self._held_since >= self.probe_every and self.limit < self.maximum:
            self._set(self.limit + max(1, self.limit // 4))
            self.phase = Phase.PROBING

    def _judge_probe(self, now: float, rate: float, baseline: float) -> None:
        """A probe above the held level: keep it if it paid, else back to the held level."""
        if rate >= baseline * self.probe_gain:
            self._baseline = rate
            self._hold(now, self.limit)
        else:
            self._hold(now, self._held)

    def _climb(self, now: float, rate: float, baseline: float) -> None:
        """Starting: a level above one whose rate is ``baseline``; go on up while it pays."""
        if rate >= baseline * self.grow:
            self._raise(rate, 4 if rate >= baseline * self.leap else 2)
            if self.limit == self._below:  # at the maximum, and it still paid: hold it
                self._hold(now, self.limit)
        elif self._below == self._first and self._below > self.minimum:  # the first doubling: go down
            self.phase = Phase.DESCENDING  # compared with the start level's rate (the baseline kept)
            self._set(self._below // 2)
        else:  # the last step up brought (almost) nothing: undo it
            self._hold(now, self._below)

    def _descend(self, now: float, rate: float, baseline: float) -> None:
        """Below a level whose rate is ``baseline``: go on halving while the rate holds, else go back up."""
        if rate >= baseline * self.keep and self.limit > self.minimum:
            self._baseline, self._below = max(rate, baseline), self.limit
            self._set(self.limit // 2)
        elif rate >= baseline * self.keep:
            self._baseline = rate
            self._hold(now, self.limit)
        else:
            self._hold(now, self._below)

    def _raise(self, rate: float, factor: int) -> None:
        """Remember ``rate`` as the current level's, and multiply the level."""
        self._baseline, self._below = rate, self.limit
        self._set(self.limit * factor)

    def _hold(self, now: float, limit: int) -> None:
        self._set(limit)
        self._held, self._held_since = self.limit, now
        self.phase = Phase.HOLDING

    def _set(self, limit: int) -> None:
        limit = max(self.minimum, min(limit, self.maximum))
        if limit != self.limit:
            self.limit = limit
            self.changes += 1
            self._settling = self.warmup
