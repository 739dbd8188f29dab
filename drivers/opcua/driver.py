"""OPC UA driver (asyncua): subscriptions or polling, one reading batch per publish cycle or poll
round, with reconnects that rebuild the session.

* ``mode: subscribe`` — monitored items (sampling interval, queue size, optional absolute/percent
  deadband filter) spread over as many subscriptions as ``max_items_per_subscription`` asks. Each
  subscription's publish responses are decoded straight into columns (no per-value callback or
  task) and one batch is emitted per publish cycle. While the pipeline applies back-pressure the
  publish loop waits, so the server holds the values (up to each item's queue size).
* ``mode: poll`` — every due node in one Read service call (chunked to the server's
  MaxNodesPerRead), one batch per round.
* Timestamps: the source timestamp; the server timestamp when there is none; else acquisition
  time. Quality: the StatusCode's severity, and the StatusCode itself as the quality code.
* Resilience: asyncua's watchdog reads the server state every ``keepalive_interval`` and reports
  a dead transport; subscriptions that stop sending (not even keep-alives) count as dead too.
  Then every series gets a bad reading with ``CONNECTION_LOST`` at the gap, and the driver
  reconnects with backoff, creating a new session, browsing again and subscribing again. A server
  restart needs nothing from the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Awaitable
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import Subscription
from pydantic import ValidationError

from drivers.opcua import browse as browsing
from drivers.opcua import client as uac
from drivers.opcua.config import OpcUaDevice
from drivers.opcua.decode import Item, Rows, status_name
from mos_agent.batch import ReadingBatch
from mos_agent.driver_api import DeviceState, Driver, DriverContext, raise_if_cancelled
from mos_agent.taxonomy import CollectorCode, Quality

MAX_PENDING_ROWS = 200_000  # decoded rows waiting for emit before the publish loop is held back
FAILED_ITEM_RETRY = 60.0  # seconds between attempts to monitor nodes the server refused
_FILTER_REFUSED = frozenset({
    ua.StatusCodes.BadFilterNotAllowed, ua.StatusCodes.BadMonitoredItemFilterUnsupported,
    ua.StatusCodes.BadDeadbandFilterInvalid, ua.StatusCodes.BadMonitoredItemFilterInvalid,
})
_DEADBAND_TYPES = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}


class SessionLost(Exception):
    """The session or its transport is gone; the driver reconnects."""


class _BatchSubscription(Subscription):
    """A subscription whose publish responses go to the driver as a whole (one decode pass per
    response) instead of asyncua's one-task-per-value handler dispatch."""

    def __init__(self, client: Client, params: ua.CreateSubscriptionParameters, driver: OpcUaDriver) -> None:
        super().__init__(client.uaclient.session, params, handler=None, queue_maxsize=1)
        self.driver = driver
        self.last_publish_at = time.monotonic()
        self.keepalive_seconds = 0.0

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        self.last_publish_at = time.monotonic()
        message = publish_result.NotificationMessage
        if not message.NotificationData:
            return  # keep-alive
        self.last_sequence_number = int(message.SequenceNumber)
        await self.driver._on_notifications(message.NotificationData)
        self.last_publish_at = time.monotonic()


class OpcUaDriver(Driver):
    device_model = OpcUaDevice
    standard = "OPC UA (IEC 62541)"
    standard_uri = "https://reference.opcfoundation.org/Core/Part1/"

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        assert isinstance(ctx.device, OpcUaDevice)
        self.config = ctx.device
        self.items: list[Item] = []
        self.failed: dict[int, int] = {}  # item index → StatusCode that kept it from being read/monitored
        self._lost: asyncio.Future[str] | None = None
        self._pending = Rows()
        self._window = ctx.agent.source_time.window()
        self._data_ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._holding = False  # publish loop held back by the pipeline: silence is ours, not the server's
        self._gap_open = False

    # ------------------------------------------------------------ validate / catalogue / browse

    @classmethod
    def expected_points_per_second(cls, device: Any) -> float:
        """Configured tags at their poll or sampling interval (browsed tags are found at connect)."""
        return sum(1.0 / device.tag_interval(tag) for tag in device.tags)

    @classmethod
    def publishing_interval(cls, device: Any) -> float | None:
        return device.subscription.publishing_interval if device.mode == "subscribe" else device.poll_interval

    @classmethod
    async def browse(cls, endpoint: str, node: str = "i=85", depth: int = 5, name: str | None = None,
                     username: str | None = None, password: str | None = None,
                     allow_plaintext_password: bool = False) -> str:
        """A device file (YAML) for the variables under ``node`` on the server at ``endpoint``."""
        return await browsing.browse_to_yaml(endpoint, node, depth, name, username, password,
                                             allow_plaintext_password=allow_plaintext_password)

    @classmethod
    async def browse_profile(cls, endpoint: str, profile: str, node: str = "i=85", depth: int = 5,
                             name: str | None = None, username: str | None = None, password: str | None = None,
                             allow_plaintext_password: bool = False) -> tuple[str, str]:
        """A profile named ``profile`` with the variables under ``node`` and a short device file
        naming it (``../profiles/<profile>.yaml``): for several machines of one model."""
        return await browsing.browse_to_profile(endpoint, profile, node, depth, name, username, password,
                                                allow_plaintext_password=allow_plaintext_password)

    # ------------------------------------------------------------ public entry points

    async def read_once(self) -> ReadingBatch:
        """Connects, reads every configured (and browsed) node once, disconnects. Raises
        :class:`~drivers.opcua.client.ConnectFailed` with one line when that is not possible."""
        client = await self._open()
        try:
            await self._prepare(client)
            rows = Rows()
            await self._read_items(client, list(range(len(self.items))), rows,
                                   await uac.max_nodes_per_read(client, self.config.poll.max_nodes_per_read))
        except (OSError, TimeoutError, EOFError, ua.UaError) as exc:
            why = status_name(exc.code) if isinstance(exc, ua.UaStatusCodeError) else (
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            raise uac.ConnectFailed("connection", f"{self.config.connection.endpoint}: read failed: {why}",
                                    self.config.name) from exc
        finally:
            await uac.close_client(client)
        self._report(rows)
        return rows.to_batch()

    async def run(self) -> None:
        ctx = self.ctx
        conn = self.config.connection
        delay = 1.0
        ever_connected = False
        try:
            while True:
                raise_if_cancelled()
                ctx.set_state(DeviceState.CONNECTING)
                try:
                    client = await self._open()
                except uac.ConnectFailed as exc:
                    ctx.report_error(exc.kind, exc.detail)
                    ctx.set_state(DeviceState.DOWN, exc.detail)
                    await self._emit_gap(CollectorCode.CONNECTION_LOST if ever_connected
                                         else CollectorCode.NOT_CONNECTED)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, conn.reconnect_max_delay)
                    continue
                ever_connected = True
                reason = await self._run_session(client)
                ctx.report_error("connection", reason)
                ctx.set_state(DeviceState.DOWN, reason)
                await self._emit_gap(CollectorCode.CONNECTION_LOST)
                delay = 1.0
                await asyncio.sleep(delay)
        finally:
            self.ctx.set_state(DeviceState.STOPPED)

    # ------------------------------------------------------------ connection

    async def _open(self) -> Client:
        client = await uac.open_client(self.config.connection, self.config.name, self.ctx.state_dir,
                                       self.ctx.agent.id)
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()

        async def on_connection_lost(exc: Exception) -> None:
            self._lose(f"connection lost: {type(exc).__name__}: {exc}" if str(exc) else
                       f"connection lost: {type(exc).__name__}")

        client.connection_lost_callback = on_connection_lost
        return client

    def _lose(self, reason: str) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    async def _run_session(self, client: Client) -> str:
        """Acquires until the session is lost; returns why. Always closes the client."""
        try:
            await self._prepare(client)
            body = self._subscribe(client) if self.config.mode == "subscribe" else self._poll(client)
            return await self._until_lost(body)
        except SessionLost as exc:
            return str(exc)
        except uac.ConnectFailed as exc:
            return exc.detail
        except Exception as exc:
            if uac.is_session_gone(exc) or isinstance(exc, TimeoutError | ua.UaError):
                return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise
        finally:
            await uac.close_client(client)

    async def _until_lost(self, body: Awaitable[None]) -> str:
        assert self._lost is not None
        task = asyncio.ensure_future(body)
        try:
            either: set[asyncio.Future[Any]] = {task, self._lost}
            done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # raises why it ended
                return "acquisition ended"
            return self._lost.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _emit_gap(self, code: int) -> None:
        """One bad reading per series where the data stops, once per outage."""
        if self._gap_open:
            return
        self._gap_open = True
        if self.items:
            series = sorted({s for item in self.items for s in item.all_series()})
        else:
            series = list(range(len(self.config.tags)))
        if series:
            await self.ctx.emit(ReadingBatch.failed(series, int(code)))

    # ------------------------------------------------------------ items

    async def _prepare(self, client: Client) -> None:
        """The session's items: configured tags, then every variable under each ``browse:`` node."""
        config = self.config
        needs_namespaces = any(t.node.startswith("nsu=") for t in config.tags) or any(
            b.node.startswith("nsu=") for b in config.browse)
        namespaces = await uac.namespace_array(client) if needs_namespaces else None
        items: list[Item] = []
        failed: dict[int, int] = {}
        unresolved = ua.NodeId(0, 0)
        for i, tag in enumerate(config.tags):
            try:
                node = uac.parse_node_id(tag.node, namespaces)
            except ValueError as exc:
                self.ctx.report_error("node", f"{tag.name}: {exc}")
                node = unresolved
                failed[len(items)] = ua.StatusCodes.BadNodeIdUnknown
            items.append(Item(node, i, tag, tag.name, config.tag_interval(tag),
                              encoding=tag.encoding or config.encoding))
        configured = {item.node_id for item in items}
        enum_types = await self._describe_configured(client, items)
        for entry in config.browse:
            try:
                root = uac.parse_node_id(entry.node, namespaces)
            except ValueError as exc:
                self.ctx.report_error("browse", f"browse {entry.node}: {exc}")
                continue
            check = (await uac.read(client, [root], ua.AttributeIds.NodeClass))[0].StatusCode
            if check is not None and not check.is_good():
                self.ctx.report_error("browse", f"browse {entry.node}: {status_name(check.value)}")
                continue
            found, truncated = await browsing.walk(client, root, entry.depth, entry.max_variables)
            if not found:
                self.ctx.report_error("browse", f"browse {entry.node}: no variables within {entry.depth} levels")
            if truncated:
                self.ctx.report_error("browse", f"browse {entry.node}: more than max_variables "
                                                f"{entry.max_variables} variables; the rest is left out")
            taken_series = {item.series for item in items}
            left_out = []
            for f in found:
                if f.node_id in configured:
                    continue  # a configured tag of the same node wins
                if f.kind in ("struct", "bytes"):
                    left_out.append(f.name)
                    continue
                encoding = entry.encoding or config.encoding
                name = browsing.tag_name_for(f.path, entry.prefix, encoding)
                try:
                    tag = entry.tag_for(name, f.node_id.to_string(), f.unit, "enum" if f.kind == "enum" else None)
                except ValidationError as exc:  # what the server named cannot make a tag: skip it, not the device
                    problem = "; ".join(err["msg"] for err in exc.errors())
                    self.ctx.report_error("browse", f"browse {entry.node}: {name}: left out: {problem}")
                    continue
                if tag.type == "enum" and f.data_type is not None:
                    enum_types[len(items)] = f.data_type
                series = self.ctx.add_series(tag)
                if series in taken_series:
                    self.ctx.report_error("browse", f"browse {entry.node}: {name} is already a tag; "
                                                    f"{f.node_id.to_string()} left out")
                    continue
                taken_series.add(series)
                configured.add(f.node_id)
                item = Item(f.node_id, series, tag, name, config.tag_interval(tag), encoding=encoding)
                item.numeric_type = f.kind in ("number", "bool")
                items.append(item)
            if left_out:
                self.ctx.log.info("device %s: browse %s: %d structure/ByteString variables left out (%s…)",
                                  config.name, entry.node, len(left_out), ", ".join(left_out[:3]))
        await self._load_enums(client, items, enum_types)
        self.items = items
        self.failed = failed

    async def _describe_configured(self, client: Client, items: list[Item]) -> dict[int, ua.NodeId]:
        """Marks which configured nodes hold numbers (deadband filters apply only to those);
        returns the DataType of each ``type: enum`` tag, by item index."""
        if not items:
            return {}
        values = await uac.read(client, [item.node_id for item in items], ua.AttributeIds.DataType)
        types = {i: dv.Value.Value for i, dv in enumerate(values)
                 if dv.Value is not None and isinstance(dv.Value.Value, ua.NodeId)}
        kinds = await uac.DataTypes(client).kinds_of(types.values())
        for i, item in enumerate(items):
            kind = kinds.get(types[i]) if i in types else None
            item.numeric_type = kind in ("number", "bool") if kind is not None else None
        return {i: types[i] for i, item in enumerate(items) if item.tag.type == "enum" and i in types}

    async def _load_enums(self, client: Client, items: list[Item], enum_types: dict[int, ua.NodeId]) -> None:
        registry = uac.DataTypes(client)
        by_type: dict[ua.NodeId, dict[int, str]] = {}
        for i, data_type in enum_types.items():
            if data_type not in by_type:
                try:
                    by_type[data_type] = await registry.enum_names(data_type)
                except Exception as exc:  # a server without enum metadata: the numbers as text
                    self.ctx.report_error("node", f"{items[i].name}: enumeration names unreadable: {exc}")
                    by_type[data_type] = {}
            items[i].enum_names = by_type[data_type]

    def _add_element(self, item: Item, index: int) -> int:
        return self.ctx.add_series(item.tag, tag_name=f"{item.name}[{index}]")

    def _report(self, rows: Rows) -> None:
        for kind, (count, message) in rows.errors.items():
            self.ctx.report_error(kind, message, count)
        rows.errors.clear()

    # ------------------------------------------------------------ poll

    async def _read_items(self, client: Client, indexes: list[int], rows: Rows, chunk: int,
                          plans: dict[tuple[int, ...], tuple[list[int], list[ua.ReadParameters]]] | None = None
                          ) -> None:
        """Reads items into rows; failed items become bad rows with their code. ``plans`` keeps
        the Read requests of each set of items, so a poll loop builds them once."""
        now_ns = time.time_ns()
        key = tuple(indexes)
        plan = plans.get(key) if plans is not None else None
        if plan is None:
            readable = [i for i in indexes if i not in self.failed]
            plan = (readable, uac.read_requests([self.items[i].node_id for i in readable], chunk=chunk))
            if plans is not None:
                plans[key] = plan
        readable, requests = plan
        for i in indexes:
            if i in self.failed:
                rows.failed(self.items[i].all_series(), self.failed[i], now_ns)
        if not readable:
            return
        values = await uac.send_reads(client, requests)
        now_ns = time.time_ns()
        add_element = self._add_element
        items = self.items
        window = self._window
        for i, dv in zip(readable, values, strict=True):
            rows.add(items[i], dv, now_ns, add_element, window)

    async def _poll(self, client: Client) -> None:
        ctx = self.ctx
        chunk = await uac.max_nodes_per_read(client, self.config.poll.max_nodes_per_read)
        groups: dict[float, list[int]] = defaultdict(list)
        for i, item in enumerate(self.items):
            groups[item.interval].append(i)
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_due = dict.fromkeys(groups, start)
        timeouts = 0
        plans: dict[tuple[int, ...], tuple[list[int], list[ua.ReadParameters]]] = {}
        self._gap_open = False
        ctx.set_state(DeviceState.RUNNING if not self.failed else DeviceState.DEGRADED, self._failed_summary())
        while True:
            now = loop.time()
            due = [interval for interval, at in next_due.items() if at <= now]
            if not due:
                await asyncio.sleep(min(next_due.values()) - now)
                continue
            indexes = [i for interval in due for i in groups[interval]]
            rows = Rows()
            began = time.perf_counter()
            try:
                async with asyncio.timeout(self.config.connection.timeout * 2):
                    await self._read_items(client, indexes, rows, chunk, plans)
                timeouts = 0
            except TimeoutError as exc:
                timeouts += 1
                ctx.report_error("timeout", f"read of {len(indexes)} nodes timed out")
                rows = Rows()
                rows.failed([s for i in indexes for s in self.items[i].all_series()], CollectorCode.TIMEOUT,
                            time.time_ns())
                if timeouts >= 3:
                    await ctx.emit(rows.to_batch())
                    raise SessionLost("three reads in a row timed out") from exc
            except ua.UaStatusCodeError as exc:
                if uac.is_session_gone(exc):
                    raise SessionLost(f"read failed: {status_name(exc.code)}") from exc
                ctx.report_error("read", f"read failed: {status_name(exc.code)}")
                rows = Rows()
                rows.failed([s for i in indexes for s in self.items[i].all_series()], exc.code, time.time_ns())
            raise_if_cancelled()
            ctx.observe_read(time.perf_counter() - began)
            self._report(rows)
            ctx.set_state(*self._poll_state(rows))
            await ctx.emit(rows.to_batch())
            now = loop.time()
            for interval in due:
                next_due[interval] += interval
                if next_due[interval] < now:  # the round took longer than the interval: skip, count
                    ctx.status.overruns += 1
                    next_due[interval] = now + interval

    def _poll_state(self, rows: Rows) -> tuple[DeviceState, str | None]:
        """Degraded while any node reads bad; the first one is named."""
        for row, quality in enumerate(rows.quality):
            if quality == Quality.BAD:
                tag = self.ctx.series.specs[rows.series[row]].tag
                code = rows.codes[row]
                collector = CollectorCode._value2member_map_.get(code)
                why = collector.name if collector is not None else status_name(code)
                return DeviceState.DEGRADED, f"{tag}: {why}"
        return DeviceState.RUNNING, None

    # ------------------------------------------------------------ subscribe

    def _filter_for(self, item: Item) -> ua.DataChangeFilter | None:
        sub = self.config.subscription
        if sub.deadband_type == "none" or item.numeric_type is not True:
            return None  # deadbands apply to numbers only; servers refuse them on other types
        return ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                   DeadbandType=_DEADBAND_TYPES[sub.deadband_type],
                                   DeadbandValue=sub.deadband_value)

    def _request(self, index: int, with_filter: bool = True) -> ua.MonitoredItemCreateRequest:
        item = self.items[index]
        params = ua.MonitoringParameters(ClientHandle=index + 1, SamplingInterval=item.interval * 1000.0,
                                         QueueSize=self.config.subscription.queue_size, DiscardOldest=True)
        flt = self._filter_for(item) if with_filter else None
        if flt is not None:
            params.Filter = flt
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=item.node_id, AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params)

    async def _monitor(self, subscription: _BatchSubscription, indexes: list[int], per_call: int) -> dict[int, int]:
        """Creates monitored items; returns the items the server refused, with its code."""
        refused: dict[int, int] = {}
        for part in uac.chunks(indexes, per_call):
            results = await subscription.create_monitored_items([self._request(i) for i in part])
            retry = []
            for i, result in zip(part, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    if result.value in _FILTER_REFUSED and self._filter_for(self.items[i]) is not None:
                        retry.append(i)
                    else:
                        refused[i] = result.value
            if retry:  # the server will not filter these: take every change instead
                self.ctx.log.info("device %s: server refused the deadband filter on %d nodes; monitoring "
                                  "them without it", self.config.name, len(retry))
                again = await subscription.create_monitored_items([self._request(i, False) for i in retry])
                for i, result in zip(retry, again, strict=True):
                    if isinstance(result, ua.StatusCode):
                        refused[i] = result.value
        return refused

    async def _subscribe(self, client: Client) -> None:
        ctx = self.ctx
        sub_config = self.config.subscription
        interval_ms = sub_config.publishing_interval * 1000.0
        keepalive_count = max(1, round(sub_config.keepalive_interval / sub_config.publishing_interval))
        per_call = await _operation_limit(
            client, ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)
        indexes = [i for i in range(len(self.items)) if i not in self.failed]
        subscriptions: list[_BatchSubscription] = []
        self._pending = Rows()
        self._data_ready.clear()
        self._drained.set()
        flusher = asyncio.create_task(self._flusher(subscriptions))
        try:
            refused: dict[int, int] = {}
            for part in uac.chunks(indexes, sub_config.max_items_per_subscription):
                params = ua.CreateSubscriptionParameters(
                    RequestedPublishingInterval=interval_ms, RequestedMaxKeepAliveCount=keepalive_count,
                    RequestedLifetimeCount=max(3 * keepalive_count, math.ceil(60_000 / interval_ms)),
                    MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0)
                subscription = _BatchSubscription(client, params, self)
                result = await subscription.init()
                subscription.keepalive_seconds = (result.RevisedPublishingInterval / 1000.0
                                                  * max(1, result.RevisedMaxKeepAliveCount))
                subscriptions.append(subscription)
                refused.update(await self._monitor(subscription, list(part), per_call))
            self.failed.update(refused)
            self._gap_open = False
            self._report_refused(refused)
            await self._emit_failed(self.failed)
            ctx.set_state(DeviceState.DEGRADED if self.failed else DeviceState.RUNNING, self._failed_summary())
            await self._watch(client, subscriptions)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flusher
            await self._flush()  # what arrived before the loss is good data: hand it on

    def _failed_summary(self) -> str | None:
        if not self.failed:
            return None
        i, code = next(iter(self.failed.items()))
        item = self.items[i]
        first = f"{item.name} ({item.tag.node}): {status_name(code)}"
        more = len(self.failed) - 1
        return f"{more + 1} nodes cannot be read, first {first}" if more else first

    def _report_refused(self, refused: dict[int, int]) -> None:
        for i, code in refused.items():
            item = self.items[i]
            self.ctx.report_error("node", f"{item.name} ({item.tag.node}): {status_name(code)}")

    async def _emit_failed(self, failed: dict[int, int]) -> None:
        """Bad readings, with the server's code, for nodes that cannot be monitored."""
        if not failed:
            return
        rows = Rows()
        now_ns = time.time_ns()
        for i, code in failed.items():
            rows.failed(self.items[i].all_series(), code, now_ns)
        await self.ctx.emit(rows.to_batch())

    async def _watch(self, client: Client, subscriptions: list[_BatchSubscription]) -> None:
        """Declares the session lost when a subscription has been silent for three keep-alive
        periods, and retries refused nodes now and then."""
        conn = self.config.connection
        last_retry = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.config.subscription.publishing_interval))
            now = time.monotonic()
            for subscription in subscriptions:
                if self._holding:
                    subscription.last_publish_at = now
                    continue
                silent = now - subscription.last_publish_at
                limit = 3 * subscription.keepalive_seconds + conn.timeout
                if silent > limit:
                    raise SessionLost(f"no publish response (not even a keep-alive) for {silent:.1f}s")
            if self.failed and now - last_retry >= FAILED_ITEM_RETRY and subscriptions:
                last_retry = now
                retry = [i for i in self.failed if self.items[i].node_id != ua.NodeId(0, 0)]
                still = await self._monitor(subscriptions[-1], retry, len(retry) or 1) if retry else {}
                raise_if_cancelled()
                for i in retry:
                    if i not in still:
                        del self.failed[i]
                self._report_refused(still)
                await self._emit_failed(still)
                self.ctx.set_state(DeviceState.DEGRADED if self.failed else DeviceState.RUNNING,
                                   self._failed_summary())

    async def _on_notifications(self, data: list[Any]) -> None:
        """Decodes one publish response into the pending rows (called by the publish loop)."""
        now_ns = time.time_ns()
        rows = self._pending
        items = self.items
        add_element = self._add_element
        window = self._window
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                for monitored in notification.MonitoredItems:
                    index = monitored.ClientHandle - 1
                    if 0 <= index < len(items):
                        rows.add(items[index], monitored.Value, now_ns, add_element, window)
            elif isinstance(notification, ua.StatusChangeNotification):
                status = notification.Status
                if status is not None and not status.is_good():
                    self._lose(f"subscription ended by the server: {status_name(status.value)}")
        if len(rows):
            self._data_ready.set()
        if len(rows) >= MAX_PENDING_ROWS:
            # the pipeline is behind: stop asking for publish responses until it catches up
            self._drained.clear()
            self._holding = True
            try:
                await self._drained.wait()
            finally:
                self._holding = False

    async def _flusher(self, subscriptions: list[_BatchSubscription]) -> None:
        """One batch per publish cycle. With one subscription that is each publish response; with
        several, whose cycles the server does not align, what arrived within one publishing
        interval of the first response."""
        interval = self.config.subscription.publishing_interval
        while True:
            await self._data_ready.wait()
            if len(subscriptions) > 1:
                await asyncio.sleep(interval)
            await self._flush()

    async def _flush(self) -> None:
        self._data_ready.clear()
        rows, self._pending = self._pending, Rows()
        self._drained.set()
        if len(rows):
            self._report(rows)
            await self.ctx.emit(rows.to_batch())


async def _operation_limit(client: Client, node: int, default: int = uac.DEFAULT_MAX_NODES) -> int:
    try:
        value = int(await client.get_node(ua.NodeId(node)).read_value() or 0)
    except Exception:  # servers without OperationLimits
        return default
    return value if value > 0 else default
