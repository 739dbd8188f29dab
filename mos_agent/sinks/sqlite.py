"""Local history sink (``type: sqlite``): the readings in a small time-series database in the
state directory, kept for ``retention`` and read back by ``mos-agent query``.

Schema (``history.sqlite``, WAL so ``query`` can read while the agent writes):

- ``series``: one row per series — measurement (= category), the asset levels, tag, stage, kind,
  unit, and any other line-protocol tags as JSON in ``labels``. Quality is not part of the
  series: it is per point.
- ``points``: ``(series_id, ts_ns)`` primary key with ``value`` (numbers, bools as 0/1),
  ``text`` (strings), ``quality`` (good/uncertain/bad) and ``quality_code`` (0 where the line has
  none: line protocol leaves code 0 out). ``INSERT OR REPLACE``
  makes a re-sent point overwrite itself, as it does in the store. A ``points`` table without
  that key (a file from elsewhere, or an older layout) is rebuilt with it on opening, the last
  written row of each (series, time) kept.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path

from mos_agent.buffer import BatchKind
from mos_agent.config.models import SqliteSinkConfig
from mos_agent.lineprotocol import LineProtocolError, parse_lines, parse_number
from mos_agent.payload import Payload
from mos_agent.sinks.base import Sink, SinkRejected, SinkRetryable

HISTORY_FILE = "history.sqlite"
SERIES_COLUMNS: tuple[str, ...] = ("measurement", "site", "area", "line", "cell", "equipment", "tag", "stage",
                                   "kind", "unit")
_LABEL_TAGS = frozenset(SERIES_COLUMNS[1:])
RETENTION_CHECK_INTERVAL = 60.0
PREFIX_CACHE_SIZE = 100_000
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    {", ".join(f"{c} TEXT NOT NULL DEFAULT ''" for c in SERIES_COLUMNS)},
    labels TEXT NOT NULL DEFAULT '{{}}',
    UNIQUE ({", ".join(SERIES_COLUMNS)}, labels)
);
CREATE INDEX IF NOT EXISTS series_equipment ON series (equipment, tag);
CREATE TABLE IF NOT EXISTS points (
    series_id INTEGER NOT NULL REFERENCES series(id),
    ts_ns INTEGER NOT NULL,
    value REAL,
    text TEXT,
    quality TEXT,
    quality_code INTEGER,
    PRIMARY KEY (series_id, ts_ns)
) WITHOUT ROWID;
"""


def history_path(config: SqliteSinkConfig, state_dir: Path) -> Path:
    """Where a sqlite sink keeps its history: ``path`` if set (relative to the state directory),
    else ``<state_dir>/history.sqlite``."""
    if config.path is None:
        return Path(state_dir) / HISTORY_FILE
    return config.path if config.path.is_absolute() else Path(state_dir) / config.path


def connect_history(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        # The buffer is the durable copy; a lost history commit after power loss is re-sent.
        conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        _key_points_by_series_and_time(conn)
    return conn


def _key_points_by_series_and_time(conn: sqlite3.Connection) -> None:
    """Give ``points`` its primary key (series, time) if it lacks it, keeping the row written last
    for every key (its rowid is the highest): duplicates would count twice in every query."""
    columns = conn.execute("PRAGMA table_info(points)").fetchall()
    key = [name for _, name, *_rest, pk in sorted(columns, key=lambda c: c[5]) if pk]
    if key == ["series_id", "ts_ns"]:
        return
    old_sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'points'").fetchone()[0]
    written_order = "" if "WITHOUT ROWID" in old_sql.upper() else " ORDER BY rowid"
    table_sql = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS points"):].replace(
        "IF NOT EXISTS points", "points_keyed")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(table_sql)
        conn.execute("INSERT OR REPLACE INTO points_keyed(series_id, ts_ns, value, text, quality, quality_code) "
                     "SELECT series_id, ts_ns, value, text, quality, quality_code FROM points" + written_order)
        conn.execute("DROP TABLE points")
        conn.execute("ALTER TABLE points_keyed RENAME TO points")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


class SqliteHistorySink(Sink):
    type = "sqlite"

    def __init__(self, name: str, config: SqliteSinkConfig, state_dir: Path) -> None:
        self.name = name
        self.path = history_path(config, state_dir)
        self.retention = float(config.retention)
        self._conn = connect_history(self.path)
        self._series: dict[tuple[str, ...], int] = {
            tuple(row[1:]): row[0]
            for row in self._conn.execute(f"SELECT id, {', '.join(SERIES_COLUMNS)}, labels FROM series")
        }
        self._prefixes: dict[bytes, tuple[int, str | None]] = {}
        self._next_retention = 0.0

    def write(self, payload: Payload, kind: BatchKind = BatchKind.LIVE) -> None:
        try:
            rows = self._rows(payload.plain)
        except (LineProtocolError, UnicodeDecodeError) as exc:
            raise SinkRejected(f"not valid line protocol: {exc}") from None
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO points(series_id, ts_ns, value, text, quality, quality_code) "
                    "VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            if time.monotonic() >= self._next_retention:
                self.apply_retention()
        except sqlite3.Error as exc:
            # disk full, locked by a long reader, I/O error: keep the batch and try again later
            raise SinkRetryable(f"history database {self.path}: {exc}") from None

    def _series_id(self, measurement: str, tags: dict[str, str]) -> int:
        labels = {k: v for k, v in tags.items() if k not in _LABEL_TAGS and k != "quality"}
        key = (measurement, *(tags.get(c, "") for c in SERIES_COLUMNS[1:]),
               json.dumps(labels, sort_keys=True, ensure_ascii=False))
        found = self._series.get(key)
        if found is not None:
            return found
        self._conn.execute(
            f"INSERT OR IGNORE INTO series({', '.join(SERIES_COLUMNS)}, labels) "
            f"VALUES ({', '.join('?' * (len(SERIES_COLUMNS) + 1))})", key)
        found = self._conn.execute(
            f"SELECT id FROM series WHERE {' AND '.join(f'{c} = ?' for c in SERIES_COLUMNS)} AND labels = ?",
            key).fetchone()[0]
        self._series[key] = found
        return found

    def _rows(self, body: bytes) -> list[tuple]:
        """Point rows for ``body``. A line's ``measurement,tags`` prefix is resolved to its series
        once (cached by the raw bytes), so the common line costs a few splits; lines with escapes
        or string fields (quotes) take the general parser."""
        rows: list[tuple] = []
        now = time.time_ns()
        cache = self._prefixes
        if len(cache) > PREFIX_CACHE_SIZE:
            cache.clear()
        for number, line in enumerate(body.split(b"\n"), start=1):
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line or line.lstrip().startswith(b"#"):
                continue
            try:
                if b"\\" in line or b'"' in line:
                    rows.append(self._general_row(line, now))
                    continue
                prefix, sep, rest = line.partition(b" ")
                if not sep:
                    raise ValueError("no field set")
                entry = cache.get(prefix)
                if entry is None:
                    measurement, tags, _, _ = next(parse_lines(prefix + b" _=0"))
                    entry = cache[prefix] = (self._series_id(measurement, tags), tags.get("quality"))
                fields, _, ts = rest.partition(b" ")
                value = code = None
                for field in fields.split(b","):
                    key, eq, raw = field.partition(b"=")
                    if not eq or not key:
                        raise ValueError(f"bad field {field.decode('utf-8', 'replace')!r}: expected key=value")
                    if key == b"value":
                        value = parse_number(raw.decode())
                    elif key == b"quality_code":
                        code = parse_number(raw.decode())
                    else:
                        parse_number(raw.decode())  # other fields are not stored, but must be valid
                ts = ts.strip()
                rows.append((entry[0], int(ts) if ts else now, None if value is None else float(value), None,
                             entry[1], 0 if code is None else int(code)))
            except LineProtocolError as exc:
                raise LineProtocolError(number, exc.reason, line.decode("utf-8", "replace")) from None
            except (ValueError, UnicodeDecodeError) as exc:
                raise LineProtocolError(number, str(exc), line.decode("utf-8", "replace")) from None
        return rows

    def _general_row(self, line: bytes, now: int) -> tuple:
        measurement, tags, fields, ts = next(parse_lines(line))
        value = fields.get("value")
        text = fields.get("text")
        code = fields.get("quality_code")
        return (
            self._series_id(measurement, tags),
            ts if ts is not None else now,
            float(value) if isinstance(value, int | float) else None,
            text if isinstance(text, str) else (None if text is None else str(text)),
            tags.get("quality"),
            int(code) if isinstance(code, int | float) else 0,  # not written when 0
        )

    def apply_retention(self) -> int:
        """Delete points older than the retention, series by series (the primary key makes each
        a range delete). Returns the number of points deleted."""
        cutoff = time.time_ns() - int(self.retention * 1e9)
        deleted = 0
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for series_id in list(self._series.values()):
                deleted += self._conn.execute("DELETE FROM points WHERE series_id = ? AND ts_ns < ?",
                                              (series_id, cutoff)).rowcount
            self._conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        self._next_retention = time.monotonic() + min(RETENTION_CHECK_INTERVAL, max(1.0, self.retention / 10))
        return deleted

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
