"""Normaliser: raw driver batch → taxonomy-conform, line-protocol-encoded chunk.

Per batch, with vector operations: scale and offset; NaN/inf become bad quality (code
NOT_A_NUMBER); values outside a tag's ``range`` become uncertain (OUT_OF_RANGE); deadband drops
values that moved less than the tag's deadband unless the quality class changed; acquisition
times (rows without a source time) of one series are kept strictly increasing at the stores'
precision. Then each kept row is formatted behind its series' pre-built prefix, with the field
templates of :mod:`mos_agent.lineprotocol` (which alone spells the store mapping). Text that
cannot be encoded as UTF-8 (lone surrogates: bytes a device's library could not decode) is found
only when encoding fails — no check on the way there — and stored with U+FFFD in their place,
quality uncertain, code DECODE_ERROR.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mos_agent.batch import ReadingBatch
from mos_agent.lineprotocol import (
    CODE_ONLY_LINE,
    NUMBER_LINE,
    NUMBER_LINE_NO_CODE,
    TEXT_LINE,
    TEXT_LINE_NO_CODE,
    VALUE_KEY,
    escape_string_field,
    line_end,
)
from mos_agent.series import SeriesTable
from mos_agent.taxonomy import CollectorCode, Quality
from mos_agent.text import is_readable, repaired

# report(kind, message, count): where the normaliser counts what it had to repair
ReportFn = Callable[[str, str, int], None]

# Plain ints: an enum member looked up on its class costs a microsecond or so, several a batch.
_GOOD, _UNCERTAIN, _BAD = int(Quality.GOOD), int(Quality.UNCERTAIN), int(Quality.BAD)
_NOT_A_NUMBER, _OUT_OF_RANGE = int(CollectorCode.NOT_A_NUMBER), int(CollectorCode.OUT_OF_RANGE)


@dataclass(slots=True)
class EncodedChunk:
    """Line protocol for a number of points, ready for the buffer."""

    body: bytes
    points: int
    newest_ns: int = 0
    on_committed: list[Callable[[], None]] = field(default_factory=list)


@dataclass(slots=True)
class NormalisedRows:
    values: np.ndarray  # float64, NaN where bad or text
    quality: np.ndarray  # int16 Quality
    codes: np.ndarray  # int64
    numeric: np.ndarray  # bool: False for text rows
    not_a_number: int
    out_of_range: int
    bad: int = 0  # rows of bad quality


@dataclass(slots=True)
class NormaliseCounts:
    read: int = 0
    kept: int = 0
    bad: int = 0
    not_a_number: int = 0
    out_of_range: int = 0
    suppressed: int = 0
    text_repaired: int = 0


class Normaliser:
    def __init__(self, table: SeriesTable, time_resolution_ns: int = 1, report: ReportFn | None = None) -> None:
        """``time_resolution_ns``: the coarsest time step the sinks keep (1 ms = 1,000,000 for a
        store keeping milliseconds); acquisition times of one series are kept at least that far
        apart, so the store does not take two readings for one. ``report(kind, message, count)``
        counts what had to be repaired (text that is not valid Unicode)."""
        self.table = table
        self.time_resolution_ns = time_resolution_ns
        self.counts = NormaliseCounts()
        self.report = report
        # sees every batch's normalised rows, deadband or not (the KPI engine's feed); called once
        # the batch is encoded, so a batch isolated row by row after a failure is seen once
        self.observer: Callable[[ReadingBatch, NormalisedRows], None] | None = None

    def normalised(self, batch: ReadingBatch, where: slice | np.ndarray | None = None) -> NormalisedRows:
        """Scale, offset and quality rules applied; no deadband, no state change (``read`` shows
        this). ``where``: the batch's series as :func:`_series_at` gives them."""
        table = self.table
        n = len(batch)
        idx = batch.series if where is None else where
        if table.transformed:
            values = batch.values * table.scale[idx] + table.offset[idx]
        else:
            values = batch.values.astype(np.float64)  # a copy: bad rows are blanked below
        quality = batch.quality.astype(np.int16)
        codes = batch.codes.copy()
        texts = batch.texts or {}

        numeric = np.ones(n, dtype=bool)
        finite = np.isfinite(values)
        if not texts and not quality.any() and bool(finite.all()):
            # the usual batch (every row a good, finite number): nothing to mark bad
            if table.ranged:
                return self._mark_out_of_range(values, quality, codes, numeric, numeric, idx, 0, 0)
            return NormalisedRows(values, quality, codes, numeric, 0, 0, 0)
        if texts:
            numeric[list(texts)] = False
        usable = quality != _BAD

        not_finite = usable & numeric & ~finite
        not_a_number = int(np.count_nonzero(not_finite))
        if not_a_number:
            quality[not_finite] = _BAD
            codes[not_finite] = _NOT_A_NUMBER
            usable &= ~not_finite
        # A bad reading carries no value even if the driver left one.
        bad = quality == _BAD
        bad_rows = int(np.count_nonzero(bad))
        if bad_rows:
            values[bad] = np.nan
        return self._mark_out_of_range(values, quality, codes, numeric, usable, idx, not_a_number, bad_rows)

    def _mark_out_of_range(self, values: np.ndarray, quality: np.ndarray, codes: np.ndarray, numeric: np.ndarray,
                           usable: np.ndarray, idx: slice | np.ndarray, not_a_number: int,
                           bad_rows: int) -> NormalisedRows:
        table = self.table
        out_of_range = 0
        if table.ranged:
            outside = usable & numeric & ((values < table.range_low[idx]) | (values > table.range_high[idx]))
            out_of_range = int(np.count_nonzero(outside))
            if out_of_range:
                quality[outside] = _UNCERTAIN
                codes[outside] = _OUT_OF_RANGE
        return NormalisedRows(values, quality, codes, numeric, not_a_number, out_of_range, bad_rows)

    def process(self, batch: ReadingBatch, deadband: bool = True) -> EncodedChunk:
        """The batch normalised and encoded. ``deadband=False`` keeps every row (a batch being
        isolated row by row after a failure: a deadband decided in the failed attempt must not drop
        the same readings again)."""
        n = len(batch)
        if n == 0:
            return EncodedChunk(b"", 0, on_committed=list(batch.on_committed))
        idx = batch.series
        each_series_once = n < 2 or bool((idx[1:] > idx[:-1]).all())  # a polled block is in series order
        where = _series_at(idx) if each_series_once else idx
        _acquisition_times_increasing(self.table.last_time, idx, batch.timestamps, batch.source_time,
                                      self.time_resolution_ns, each_series_once, where)
        rows = self.normalised(batch, where)
        texts = batch.texts or {}
        keep = self._deadband(idx, where, rows.values, rows.quality, rows.codes, rows.numeric, each_series_once,
                              deadband)
        kept_rows = np.flatnonzero(keep) if keep is not None else None
        kept = n if kept_rows is None else len(kept_rows)
        body = b""
        if kept:
            consecutive = isinstance(where, slice)
            try:
                body = self._encode(kept_rows, idx, rows, batch.timestamps, texts, consecutive)
            except UnicodeEncodeError:
                texts = self._readable_texts(texts, rows)
                body = self._encode(kept_rows, idx, rows, batch.timestamps, texts, consecutive)
        if self.observer is not None:
            try:
                self.observer(batch, rows)
            except Exception as exc:  # a failing feed must not cost the readings (nor isolate them)
                if self.report is not None:
                    self.report("observer", f"{type(exc).__name__}: {exc}", 1)
        c = self.counts
        c.read += n
        c.bad += rows.bad
        c.not_a_number += rows.not_a_number
        c.out_of_range += rows.out_of_range
        c.kept += kept
        c.suppressed += n - kept
        newest = int(batch.timestamps.max())
        table = self.table
        if each_series_once:
            table.last_time[where] = np.maximum(table.last_time[where], batch.timestamps)
        else:
            np.maximum.at(table.last_time, idx, batch.timestamps)
        for row, text in texts.items():
            table.last_text[int(idx[row])] = text
        return EncodedChunk(body, kept, newest, list(batch.on_committed) if batch.on_committed else [])

    def _readable_texts(self, texts: dict[int, str], rows: NormalisedRows) -> dict[int, str]:
        """Texts with their unencodable characters replaced; a good reading whose text needed that
        becomes uncertain (DECODE_ERROR)."""
        readable = dict(texts)
        repairs = 0
        for row, text in texts.items():
            if not is_readable(text):
                readable[row] = repaired(text)
                repairs += 1
                if rows.quality[row] == _GOOD:
                    rows.quality[row] = _UNCERTAIN
                    rows.codes[row] = CollectorCode.DECODE_ERROR
        self.counts.text_repaired += repairs
        if self.report is not None and repairs:
            self.report("text", f"{repairs} text value(s) held bytes that are not valid in the device's encoding; "
                                "stored with U+FFFD in their place (set encoding: on the tag or device if the "
                                "device uses a legacy code page such as cp949)", repairs)
        return readable

    def _deadband(self, idx: np.ndarray, where: slice | np.ndarray, values: np.ndarray, quality: np.ndarray,
                  codes: np.ndarray, numeric: np.ndarray, each_series_once: bool,
                  apply: bool = True) -> np.ndarray | None:
        """The rows to keep, or ``None`` for all of them (``apply=False``: all of them, the
        deadband state updated as if they had passed)."""
        table = self.table
        band = table.deadband[where] if table.deadbanded else None
        if not apply or band is None or not band.any():
            table.last_value[where] = values
            table.last_quality[where] = quality
            table.last_code[where] = codes
            return None
        if not each_series_once and len(np.unique(idx)) != len(idx):
            return self._deadband_sequential(idx, values, quality, codes, numeric)
        last = table.last_value[where]
        changed_quality = quality != table.last_quality[where]
        moved = ~(np.abs(values - last) < band)  # NaN on either side counts as moved
        keep = (band == 0) | changed_quality | moved | ~numeric
        rows = idx[keep]
        table.last_value[rows] = values[keep]
        table.last_quality[rows] = quality[keep]
        table.last_code[rows] = codes[keep]
        return keep

    def _deadband_sequential(self, idx: np.ndarray, values: np.ndarray, quality: np.ndarray, codes: np.ndarray,
                             numeric: np.ndarray) -> np.ndarray:
        table = self.table
        keep = np.zeros(len(idx), dtype=bool)
        for row, s in enumerate(idx.tolist()):
            band = table.deadband[s]
            v = values[row]
            if (band == 0 or not numeric[row] or quality[row] != table.last_quality[s]
                    or not abs(v - table.last_value[s]) < band):
                keep[row] = True
                table.last_value[s] = v
                table.last_quality[s] = quality[row]
                table.last_code[s] = codes[row]
        return keep

    def _encode(self, rows: np.ndarray | None, idx: np.ndarray, normalised: NormalisedRows, timestamps: np.ndarray,
                texts: dict[int, str], consecutive: bool = False) -> bytes:
        """Lines of the kept ``rows`` (``None``: every row; there is at least one). ``consecutive``:
        the batch's series are consecutive and increasing."""
        prefixes = self.table.prefixes
        values, quality, codes = normalised.values, normalised.quality, normalised.codes
        if rows is not None and len(rows) == len(values):
            rows = None
        kept: slice | np.ndarray = slice(None) if rows is None else rows  # all kept: views, not copies
        if not texts:
            kept_values = values[kept]
            # without texts only bad rows have no value
            if not normalised.bad or not np.isnan(kept_values).any():
                return _encode_values(prefixes, idx[kept], kept_values, quality[kept], codes[kept], timestamps[kept],
                                      consecutive and rows is None)
        if rows is None:
            rows = np.arange(len(values))
        series = idx[rows].tolist()
        vals = values[rows].tolist()
        quals = quality[rows].tolist()
        code_list = codes[rows].tolist()
        times = timestamps[rows].tolist()
        number_line, number_line_no_code = NUMBER_LINE.format, NUMBER_LINE_NO_CODE.format
        code_only_line = CODE_ONLY_LINE.format
        if not texts:
            lines = [
                (number_line(prefixes[q][s], v, c, t) if c else number_line_no_code(prefixes[q][s], v, t))
                if v == v else code_only_line(prefixes[q][s], c, t)
                for s, v, q, c, t in zip(series, vals, quals, code_list, times, strict=True)
            ]
        else:
            text_line, text_line_no_code = TEXT_LINE.format, TEXT_LINE_NO_CODE.format
            lines = []
            for row, s, v, q, c, t in zip(rows.tolist(), series, vals, quals, code_list, times, strict=True):
                prefix = prefixes[q][s]
                text = texts.get(row)
                if text is not None and q != _BAD:
                    text = escape_string_field(text)
                    lines.append(text_line(prefix, text, c, t) if c else text_line_no_code(prefix, text, t))
                elif v == v:
                    lines.append(number_line(prefix, v, c, t) if c else number_line_no_code(prefix, v, t))
                else:
                    lines.append(code_only_line(prefix, c, t))
        return "".join(lines).encode()


def _series_at(series: np.ndarray) -> slice | np.ndarray:
    """How to index the series table for a batch whose series increase: a slice (views, no
    gathering) when they are consecutive — a polled block — else the series themselves."""
    first, last = int(series[0]), int(series[-1])
    return slice(first, last + 1) if last - first == len(series) - 1 else series


def _acquisition_times_increasing(last_time: np.ndarray, series: np.ndarray, times: np.ndarray,
                                  source_time: np.ndarray | None, step: int, each_series_once: bool,
                                  where: slice | np.ndarray | None = None) -> None:
    """Moves each acquisition time (a row not marked in ``source_time``) that is not in a later
    ``step`` than its series' readings of earlier batches (``last_time``) and its earlier
    acquisition times in this batch to the next free step, in place. Messages read in one burst
    are microseconds apart; a store keeping milliseconds would otherwise keep one of them. Times
    already apart are left as they are. A series' steps ``q`` become ``q'[k] = max(q[k],
    q'[k-1] + 1)``, i.e. ``q'[k] - k`` is the running maximum of ``q[k] - k``: one sort and one
    accumulate per batch, no loop per row. ``where``: the series as :func:`_series_at` gives them
    for a batch of each series once (a polled block: a slice)."""
    if source_time is None and each_series_once and where is not None \
            and int(times.min()) // step > int(last_time[where].max()) // step:
        return  # the usual poll: every time in a later step than everything before it
    if source_time is not None:
        rows = np.flatnonzero(~source_time)
        if not len(rows):
            return
        series, wanted = series[rows], times[rows]
    else:
        rows, wanted = None, times
    steps = wanted // step if step > 1 else wanted
    last = last_time[series] // step if step > 1 else last_time[series]
    if each_series_once:
        moved = steps <= last
        if not moved.any():
            return
        where = np.flatnonzero(moved)
        new_steps = last[moved] + 1
    else:
        n = len(series)
        # an MQTT burst is often one topic: rows already grouped need no sort
        order = np.arange(n) if bool((series[1:] >= series[:-1]).all()) else np.argsort(series, kind="stable")
        ordered = series[order]
        first = np.empty(n, dtype=bool)
        first[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
        group = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        position = np.arange(n) - starts[group]
        floor = np.maximum(steps[order] - position, last[order] + 1)
        low = int(floor.min())
        span = int(floor.max()) - low + 1
        if span * len(starts) < 2**62:  # lift each series above the previous one: one accumulate
            lift = group * span
            running = np.maximum.accumulate(floor - low + lift) - lift + low
        else:  # times far apart (a clock stepped by years): series by series
            running = floor
            for begin, end in zip(starts.tolist(), [*starts[1:].tolist(), n], strict=True):
                np.maximum.accumulate(running[begin:end], out=running[begin:end])
        result = running + position
        moved = result != steps[order]
        if not moved.any():
            return
        where = order[moved]
        new_steps = result[moved]
    if rows is not None:
        where = rows[where]
    times[where] = new_steps * step


def _encode_values(prefixes: tuple[list[str], ...], series: np.ndarray, values: np.ndarray,
                   quality: np.ndarray, codes: np.ndarray, timestamps: np.ndarray,
                   consecutive: bool = False) -> bytes:
    """The common case — every row carries a number — byte for byte what the general loop in
    :meth:`Normaliser._encode` writes, at well under half its cost (0.12 against 0.44 µs a point
    for a polled block of 1,000 registers; formatting was the agent's largest CPU cost per point
    after the reading itself). Each line is joined from four parts made by C-level calls, not an
    f-string per row: the prefixes of a block of consecutive series of one quality (a polled
    block; ``consecutive``: the caller knows they are) are one list slice; the
    ``[,quality_code=…i] <time>`` tail (:func:`line_end`) is formatted once per run of rows
    sharing code and time; integral values (register values) are formatted as integers plus
    ``.0``, which is what ``repr`` prints for them. At the loads plants run (a block of 100
    registers a device a second) the numpy calls, not the points, are the cost: the usual block —
    one time, code 0, one quality — is recognised with a handful of them. (A table of the 65,536
    register texts is twice as fast on its own and slower in the running agent, where its 4 MB
    do not stay in cache.)"""
    n = len(values)
    first_time = int(timestamps[0])
    one_run = int(timestamps[-1]) == first_time and not codes.any() and bool((timestamps == first_time).all())
    # repr(float) is str(int) + ".0" for integral values below 1e16 (above: exponent notation);
    # -0.0 is the exception, its int is 0
    low, high = float(values.min()), float(values.max())
    integral = False
    if low > -1e16 and high < 1e16:
        whole = values.astype(np.int64)
        integral = bool((whole == values).all()) and not (
            low <= 0.0 <= high and bool(np.signbit(values[whole == 0]).any()))
    if integral:
        value_texts = map(str, whole.tolist())
        fraction = ".0"
    else:
        value_texts = map(repr, values.tolist())
        fraction = ""

    def tail(code: int, time_ns: int) -> str:
        return fraction + line_end(code, time_ns)

    parts: list[str | None] = [None] * (4 * n)
    first_quality = int(quality[0])
    if not (quality.any() if first_quality == 0 else (quality != first_quality).any()):
        by_series = prefixes[first_quality]
        first = int(series[0])
        if consecutive or (int(series[-1]) - first == n - 1 and bool((series[1:] - series[:-1] == 1).all())):
            parts[0::4] = by_series[first:first + n]
        else:
            parts[0::4] = map(by_series.__getitem__, series.tolist())
    else:
        parts[0::4] = map(operator.getitem, map(prefixes.__getitem__, quality.tolist()), series.tolist())
    parts[1::4] = [VALUE_KEY] * n
    parts[2::4] = value_texts
    if one_run:
        parts[3::4] = [tail(0, first_time)] * n
    else:
        change = np.empty(n, dtype=bool)
        change[0] = True
        np.not_equal(timestamps[1:], timestamps[:-1], out=change[1:])
        change[1:] |= codes[1:] != codes[:-1]
        starts = np.flatnonzero(change)
        if len(starts) * 4 <= n:  # a few runs (a device's cycle: one per request): a list a run
            run_tails: list[str] = []
            bounds = starts.tolist()
            for text, begin, end in zip(map(tail, codes[starts].tolist(), timestamps[starts].tolist()),
                                        bounds, [*bounds[1:], n], strict=True):
                run_tails += [text] * (end - begin)
            parts[3::4] = run_tails
        else:
            parts[3::4] = map(tail, codes.tolist(), timestamps.tolist())
    return "".join(parts).encode()  # type: ignore[arg-type]
