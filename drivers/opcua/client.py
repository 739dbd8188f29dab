"""Opening an asyncua session the way the device file says, and the few service calls the driver
and ``browse`` share: batched Read and Browse chunked to the server's operation limits, node ids
with namespace URIs, and what kind of value a DataType holds.

Every failure to connect becomes a :class:`ConnectFailed` with one line that names the device and
what to do, and a ``kind`` (connection, auth, security) for the device's error counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from asyncua import Client, ua
from asyncua.ua import uaerrors

from drivers.opcua import security as sec
from drivers.opcua.config import OpcUaConnection
from drivers.opcua.decode import status_name

log = logging.getLogger(__name__)

DEFAULT_MAX_NODES = 1000
CLIENT_NAME = "mos-agent"

# Errors that mean the session or its transport is gone (the driver reconnects).
SESSION_GONE_CODES = frozenset({
    ua.StatusCodes.BadSessionIdInvalid, ua.StatusCodes.BadSessionClosed, ua.StatusCodes.BadSessionNotActivated,
    ua.StatusCodes.BadSecureChannelIdInvalid, ua.StatusCodes.BadSecureChannelClosed,
    ua.StatusCodes.BadConnectionClosed, ua.StatusCodes.BadServerHalted, ua.StatusCodes.BadShutdown,
    ua.StatusCodes.BadNoSubscription, ua.StatusCodes.BadCommunicationError,
})


class ConnectFailed(Exception):
    """The device cannot be connected; ``str()`` is one line for the operator, naming the device
    (``detail`` is the same without the device, for logs that name it already)."""

    def __init__(self, kind: str, detail: str, device: str | None = None) -> None:
        super().__init__(f"device {device}: {detail}" if device else detail)
        self.kind = kind
        self.detail = detail


def is_session_gone(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | OSError | EOFError):
        return True
    return isinstance(exc, uaerrors.UaStatusCodeError) and getattr(exc, "code", None) in SESSION_GONE_CODES


def _explain(exc: BaseException, device: str | None, conn: OpcUaConnection, cert: Path | None) -> ConnectFailed:
    endpoint = conn.endpoint
    if isinstance(exc, ConnectFailed):
        return exc
    if isinstance(exc, sec.SecuritySetupError):
        return ConnectFailed("security", str(exc), device)
    if isinstance(exc, uaerrors.UaStatusCodeError) and getattr(exc, "code", None) is not None:
        code = exc.code
        name = status_name(code)
        if code == ua.StatusCodes.BadUserAccessDenied:
            user = f"user {conn.username!r}" if conn.username else "anonymous login"
            return ConnectFailed("auth", f"{endpoint} refused {user}: {name} "
                                         "(check connection.username and the password)", device)
        if code in (ua.StatusCodes.BadIdentityTokenRejected, ua.StatusCodes.BadIdentityTokenInvalid):
            how = "username/password" if conn.username else "anonymous"
            return ConnectFailed("auth", f"{endpoint} does not accept {how} logins: {name}", device)
        if code in (ua.StatusCodes.BadCertificateUntrusted, ua.StatusCodes.BadSecurityChecksFailed,
                    ua.StatusCodes.BadCertificateInvalid, ua.StatusCodes.BadCertificateUriInvalid):
            hint = f": the server must trust the agent's certificate {cert}" if cert else ""
            return ConnectFailed("security", f"{endpoint} rejected the connection: {name}{hint}", device)
        return ConnectFailed("connection", f"{endpoint}: {name}", device)
    if isinstance(exc, TimeoutError):
        return ConnectFailed("timeout", f"no answer from {endpoint} within {conn.timeout:g}s", device)
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed("connection", f"cannot connect to {endpoint}: connection refused", device)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return ConnectFailed("connection", f"cannot connect to {endpoint}: {reason}", device)
    return ConnectFailed("connection", f"{endpoint}: {type(exc).__name__}: {exc}", device)


_warned_plaintext: set[tuple[str | None, str]] = set()


def _warn_plaintext_password(device: str | None, conn: OpcUaConnection) -> None:
    """Once per device and endpoint: loud, but not on every reconnect."""
    if (device, conn.endpoint) in _warned_plaintext:
        return
    _warned_plaintext.add((device, conn.endpoint))
    who = f"device {device}" if device else "browse"
    log.warning("%s: the password of user %r goes to %s in CLEAR TEXT (security policy None, "
                "allow_plaintext_password: true): anyone on the network can read it", who, conn.username, conn.endpoint)


async def open_client(conn: OpcUaConnection, device: str | None, state_dir: Path | None, agent_id: str) -> Client:
    """A connected, activated asyncua client. The library's own reconnect is off: the driver owns
    reconnects so it knows exactly where the gap in the data is."""
    client = Client(conn.endpoint, timeout=conn.timeout, watchdog_intervall=conn.keepalive_interval)
    client.name = client.description = CLIENT_NAME
    client.product_uri = "urn:mos-agent"
    client.application_uri = sec.application_uri(agent_id)
    client.session_timeout = int(conn.session_timeout * 1000)
    cert_path: Path | None = None
    try:
        if conn.username:
            if conn.sends_plaintext_password:
                _warn_plaintext_password(device, conn)
            client.set_user(conn.username)
            password = conn.read_password()
            if password is not None:
                client.set_password(password)
        security = conn.security
        if security.secured:
            assert security.mode is not None
            if state_dir is None:
                raise ConnectFailed("security", "message security needs the agent's state_dir")
            mine = await sec.client_certificate(security, state_dir, agent_id)
            cert_path = mine.certificate
            client.application_uri = mine.application_uri
            server = await sec.server_certificate_of(conn.endpoint, security.policy, security.mode, conn.timeout)
            sec.check_server_certificate(server, conn.endpoint, security, state_dir)
            await client.set_security(sec.POLICIES[security.policy], str(mine.certificate), str(mine.private_key),
                                      server_certificate=server.certificate, mode=sec.MODES[security.mode])
        async with asyncio.timeout(conn.timeout * 3):
            await client.connect(auto_reconnect=False)
    except asyncio.CancelledError:
        client.disconnect_socket()
        raise
    except Exception as exc:
        client.disconnect_socket()
        raise _explain(exc, device, conn, cert_path) from exc
    return client


async def close_client(client: Client, timeout: float = 2.0) -> None:
    """Closes the session if the server is still there; never hangs on a dead one."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        async with asyncio.timeout(timeout):
            await client.disconnect()
    client.disconnect_socket()


# ---------------------------------------------------------------- node ids


async def namespace_array(client: Client) -> list[str]:
    return list(await client.get_node(ua.NodeId(ua.ObjectIds.Server_NamespaceArray)).read_value())


def parse_node_id(text: str, namespaces: Sequence[str] | None) -> ua.NodeId:
    """A configured node id; ``nsu=<uri>;`` is looked up in the server's namespace array (namespace
    indexes may change between server versions, URIs do not)."""
    if text.startswith("nsu="):
        uri, _, rest = text[4:].partition(";")
        if namespaces is None or uri not in namespaces:
            raise ValueError(f"namespace {uri!r} of node {text} is not on this server")
        text = f"ns={list(namespaces).index(uri)};{rest}"
    node = ua.NodeId.from_string(text)
    return ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)


def plain(node: ua.NodeId) -> ua.NodeId:
    """An ExpandedNodeId from a browse result as a plain NodeId (hashable, comparable)."""
    return ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)


# ---------------------------------------------------------------- batched services


async def max_nodes_per_read(client: Client, configured: int | None) -> int:
    if configured:
        return configured
    node = client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead))
    try:
        limit = int(await node.read_value() or 0)
    except Exception:  # servers without OperationLimits
        return DEFAULT_MAX_NODES
    return limit if limit > 0 else DEFAULT_MAX_NODES


def chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def read_requests(nodes: Sequence[ua.NodeId], attribute: ua.AttributeIds = ua.AttributeIds.Value,
                  chunk: int = DEFAULT_MAX_NODES) -> list[ua.ReadParameters]:
    """Read requests for ``nodes``, ``chunk`` nodes each, asking for both timestamps (a poll loop
    builds them once and sends them every round)."""
    requests = []
    for part in chunks(nodes, chunk):
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=attribute) for n in part]
        requests.append(params)
    return requests


async def send_reads(client: Client, requests: Sequence[ua.ReadParameters]) -> list[ua.DataValue]:
    """The requests sent together; their results in order."""
    parts = await asyncio.gather(*(client.uaclient.read(params) for params in requests))
    return [dv for part in parts for dv in part]


async def read(client: Client, nodes: Sequence[ua.NodeId], attribute: ua.AttributeIds = ua.AttributeIds.Value,
               chunk: int = DEFAULT_MAX_NODES) -> list[ua.DataValue]:
    """One Read request per ``chunk`` nodes, sent together; both timestamps returned."""
    return await send_reads(client, read_requests(nodes, attribute, chunk))


async def browse(client: Client, nodes: Sequence[ua.NodeId], reference_type: int, node_class_mask: int,
                 direction: ua.BrowseDirection = ua.BrowseDirection.Forward,
                 chunk: int = DEFAULT_MAX_NODES) -> list[list[ua.ReferenceDescription]]:
    """References of many nodes at once, following continuation points."""
    results: list[list[ua.ReferenceDescription]] = []
    for part in chunks(nodes, chunk):
        params = ua.BrowseParameters()
        params.View = ua.ViewDescription()
        params.RequestedMaxReferencesPerNode = 0
        params.NodesToBrowse = [
            ua.BrowseDescription(NodeId=n, BrowseDirection=direction, ReferenceTypeId=ua.NodeId(reference_type),
                                 IncludeSubtypes=True, NodeClassMask=node_class_mask,
                                 ResultMask=ua.BrowseResultMask.All)
            for n in part
        ]
        answers = await client.uaclient.browse(params)
        for answer in answers:
            refs = list(answer.References) if answer.StatusCode.is_good() else []
            point = answer.ContinuationPoint
            while point:
                more = await client.uaclient.browse_next(
                    ua.BrowseNextParameters(ReleaseContinuationPoints=False, ContinuationPoints=[point]))
                refs.extend(more[0].References)
                point = more[0].ContinuationPoint
            results.append(refs)
    return results


# ---------------------------------------------------------------- data types

_NS0_KINDS: dict[int, str] = {
    1: "bool",
    **dict.fromkeys((2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 26, 27, 28, 50), "number"),
    **dict.fromkeys((12, 13, 14, 17, 18, 20, 21), "string"),
    15: "bytes",
    19: "number",  # StatusCode
    22: "struct",
    29: "enum",
    24: "auto",  # BaseDataType: anything
}


class DataTypes:
    """What kind of value a DataType holds (number, bool, string, enum, struct, bytes, auto),
    found by walking its supertypes to a built-in type; cached per session."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.kinds: dict[ua.NodeId, str] = {}
        self.names: dict[ua.NodeId, str] = {}

    def known(self, node: ua.NodeId) -> str | None:
        if node.NamespaceIndex == 0 and isinstance(node.Identifier, int) and node.Identifier in _NS0_KINDS:
            return _NS0_KINDS[node.Identifier]
        return self.kinds.get(node)

    async def kinds_of(self, types: Iterable[ua.NodeId]) -> dict[ua.NodeId, str]:
        wanted = {t for t in types if not t.is_null()}
        # each unknown type → its current ancestor, walked up one level per round (one Browse each)
        frontier = {t: t for t in wanted if self.known(t) is None}
        for _ in range(12):
            if not frontier:
                break
            asked = list(set(frontier.values()))
            parents = await browse(self.client, asked, ua.ObjectIds.HasSubtype, 0,
                                   direction=ua.BrowseDirection.Inverse)
            up: dict[ua.NodeId, ua.NodeId | None] = {}
            for node, refs in zip(asked, parents, strict=True):
                up[node] = plain(refs[0].NodeId) if refs else None
            nxt: dict[ua.NodeId, ua.NodeId] = {}
            for start, current in frontier.items():
                parent = up.get(current)
                kind = self.known(parent) if parent is not None else "auto"
                if kind is not None:
                    self.kinds[start] = kind
                elif parent is not None:
                    nxt[start] = parent
            frontier = nxt
        for start in frontier:
            self.kinds[start] = "auto"
        return {t: self.known(t) or "auto" for t in wanted}

    async def names_of(self, types: Iterable[ua.NodeId]) -> dict[ua.NodeId, str]:
        missing = [t for t in set(types) if t not in self.names and not t.is_null()]
        if missing:
            values = await read(self.client, missing, ua.AttributeIds.BrowseName)
            for t, dv in zip(missing, values, strict=True):
                value = dv.Value.Value if dv.Value is not None else None
                self.names[t] = value.Name if isinstance(value, ua.QualifiedName) else t.to_string()
        return {t: self.names.get(t, "?") for t in types}

    async def enum_names(self, data_type: ua.NodeId) -> dict[int, str]:
        """Value → name of an enumeration, from its DataTypeDefinition, EnumStrings or EnumValues."""
        node = self.client.get_node(data_type)
        with contextlib.suppress(Exception):
            definition = await node.read_data_type_definition()
            if isinstance(definition, ua.EnumDefinition) and definition.Fields:
                return {int(f.Value): f.Name or (f.DisplayName.Text or str(f.Value)) for f in definition.Fields}
        props = await browse(self.client, [data_type], ua.ObjectIds.HasProperty, ua.NodeClass.Variable)
        for ref in props[0]:
            name = ref.BrowseName.Name
            if name not in ("EnumStrings", "EnumValues"):
                continue
            value = await self.client.get_node(plain(ref.NodeId)).read_value()
            if name == "EnumStrings":
                return {i: (t.Text if isinstance(t, ua.LocalizedText) else str(t)) or str(i)
                        for i, t in enumerate(value or [])}
            return {int(v.Value): v.DisplayName.Text or str(v.Value) for v in value or []}
        return {}
