"""What a VictoriaMetrics store actually holds per dataset — time range, point count, quality
shares — read through its Prometheus-compatible query API, for the catalogue to describe."""

from __future__ import annotations

import base64
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mos_agent.catalog.identity import dataset_identifier
from mos_agent.taxonomy import CATEGORIES

if TYPE_CHECKING:
    from mos_agent.config.loader import LoadedConfig


@dataclass(frozen=True, slots=True)
class Observation:
    """What the store holds for one dataset within the observation window."""

    good: int
    uncertain: int
    bad: int
    first_ns: int | None
    last_ns: int | None
    window_seconds: float
    observed_at: datetime

    @property
    def points(self) -> int:
        return self.good + self.uncertain + self.bad


class StoreUnavailable(Exception):
    """The store could not be queried; the message is one line and holds no credentials."""


def _split_credentials(url: str) -> tuple[str, str | None]:
    """(url without user info, so safe to print; Authorization header or None)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"store url must start with http:// or https://, got {url!r}")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    clean = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    auth = None
    if parts.username is not None:
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode()
    return clean, auth


def _query(base: str, auth: str | None, promql: str, at: float, timeout: float) -> list[dict]:
    body = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"}).encode()
    request = urllib.request.Request(f"{base}/api/v1/query", data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            detail = json.loads(exc.read()).get("error", "")
        except (ValueError, OSError, AttributeError):
            detail = ""
        raise StoreUnavailable(f"store at {base} answered HTTP {exc.code}"
                               f"{': ' + detail.splitlines()[0] if detail else ''}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreUnavailable(f"cannot reach the store at {base}: {reason}") from None
    except ValueError:
        raise StoreUnavailable(f"store at {base} did not answer with JSON (is it a "
                               f"Prometheus-compatible query API such as VictoriaMetrics?)") from None
    if not isinstance(answer, dict) or answer.get("status") != "success":
        error = answer.get("error", "unknown error") if isinstance(answer, dict) else "unexpected answer"
        raise StoreUnavailable(f"store at {base} rejected the query: {error}")
    return answer.get("data", {}).get("result", [])


_GROUP_LABELS = ("site", "area", "line", "cell", "equipment")


def _label_key(metric: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(metric.get(label, "") for label in _GROUP_LABELS)


def observe_store(store_url: str, loaded: LoadedConfig, since_seconds: float, *,
                  timeout: float = 30.0, now: datetime | None = None) -> dict[str, Observation]:
    """Per-dataset time range, point count and quality split from a VictoriaMetrics store.

    A reading is counted once, by its ``quality`` label: a good or uncertain one by its
    ``<category>_value`` or ``<category>_text`` row, a bad one (which carries neither) by its
    ``<category>_quality_code`` row — quality_code 0 is not written, so good readings have no code
    row unless a sink writes them all. Three aggregate queries for the whole site, never one per
    series: the answer stays small however much data there is.
    Series whose asset path was filled at run time (MQTT topic captures) match a dataset only if
    they kept the device's configured path.
    """
    base, auth = _split_credentials(store_url)
    agent = loaded.agent.agent
    now = now or datetime.now(UTC)
    at = now.timestamp()
    categories = "|".join(CATEGORIES)
    site = f'site="{agent.site}"'
    valued = f'{{__name__=~"({categories})_(value|text)",quality!="bad",{site}}}'
    bad = f'{{__name__=~"({categories})_quality_code",quality="bad",{site}}}'
    selector = f'{{__name__=~"({categories})_(value|text|quality_code)",{site}}}'
    window = f"[{max(1, math.ceil(since_seconds))}s]"
    group = ",".join(_GROUP_LABELS)

    counts: dict[tuple[str, ...], dict[str, int]] = {}
    # the two selectors never share a quality label, so "or" keeps every group of both
    for row in _query(base, auth, f"sum by ({group},quality) (count_over_time({valued}{window})) or "
                                  f"sum by ({group},quality) (count_over_time({bad}{window}))", at, timeout):
        quality = row["metric"].get("quality", "")
        bucket = counts.setdefault(_label_key(row["metric"]), {})
        bucket[quality] = bucket.get(quality, 0) + int(float(row["value"][1]))
    firsts = {_label_key(row["metric"]): float(row["value"][1]) for row in _query(
        base, auth, f"min by ({group}) (tfirst_over_time({selector}{window}))", at, timeout)}
    lasts = {_label_key(row["metric"]): float(row["value"][1]) for row in _query(
        base, auth, f"max by ({group}) (tlast_over_time({selector}{window}))", at, timeout)}

    observed: dict[str, Observation] = {}
    for device in loaded.devices:
        key = (agent.site, device.asset.area, device.asset.line or "", device.asset.cell or "", device.name)
        split = counts.get(key, {})
        first, last = firsts.get(key), lasts.get(key)
        observed[dataset_identifier(loaded, device)] = Observation(
            good=split.get("good", 0),
            uncertain=split.get("uncertain", 0),
            bad=split.get("bad", 0),
            # the store keeps milliseconds; rounding there avoids float noise in the nanoseconds
            first_ns=round(first * 1000) * 1_000_000 if first is not None else None,
            last_ns=round(last * 1000) * 1_000_000 if last is not None else None,
            window_seconds=since_seconds,
            observed_at=now,
        )
    return observed
