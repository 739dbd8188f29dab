"""The OPC UA driver when things go wrong: the server restarts, stops publishing, is not there yet,
refuses the password; and message security with pinned, trusted and unknown server certificates.
Each test has a simulator of its own (a real asyncua server on a free port)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time

import pytest
from asyncua import ua

from drivers.opcua.client import ConnectFailed
from mos_agent.driver_api import DeviceState
from mos_agent.localservers import free_port
from mos_agent.taxonomy import CollectorCode
from tests.support.waiting import wait_until_async

TAGS = [("spindle_speed", "Spindle.Speed", "/min"), ("spindle_load", "Spindle.Load", "%"),
        ("axis_temperature", "Diagnostics.AxisTemperatures", "Cel")]


def tags(sim) -> list[dict]:
    return [{"name": n, "node": sim.node_id(p), "unit": u, "category": "process"} for n, p, u in TAGS]


def all_series(driver) -> set[str]:
    return {s.tag for s in driver.ctx.series.specs if s.tag != "axis_temperature"}  # the array's elements


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_server_restart_recovers_with_a_bad_quality_gap(start_sim, kit, mode) -> None:
    sim = await start_sim(update_rate=10)
    device = kit.device(sim.endpoint, tags(sim), mode=mode, poll_interval="100ms",
                        subscription={"publishing_interval": "100ms"})
    driver, rec = kit.driver(device)
    async with kit.running(driver):
        await wait_until_async(lambda: len({r.tag for r in rec.readings()}) == 5, what="good values from every series")
        await wait_until_async(lambda: driver.ctx.status.state == DeviceState.RUNNING, what="running")
        before_restart = time.time_ns()
        await sim.restart(down_for=1.5)
        back = time.time_ns()
        await wait_until_async(lambda: {r.tag for r in rec.readings() if r.time > back and r.quality == "good"}
                               == all_series(driver), timeout=30, what="good values after the restart")
        await wait_until_async(lambda: driver.ctx.status.state == DeviceState.RUNNING, what="running again")
    gap = [r for r in rec.readings() if r.code == CollectorCode.CONNECTION_LOST]
    assert {r.tag for r in gap} == all_series(driver)
    assert all(r.quality == "bad" and r.value is None and before_restart <= r.time <= back for r in gap)
    assert len(gap) == len(all_series(driver)), "one gap row per series, not one per reconnect attempt"
    assert driver.ctx.status.errors.get("connection", 0) >= 1


async def test_stalled_publishing_is_detected_and_the_session_rebuilt(start_sim, kit) -> None:
    sim = await start_sim(update_rate=10)
    device = kit.device(sim.endpoint, tags(sim)[:2], connection={"timeout": "1s"},
                        subscription={"publishing_interval": "100ms", "keepalive_interval": "300ms"})
    driver, rec = kit.driver(device)
    async with kit.running(driver):
        await wait_until_async(lambda: len(rec.readings()) >= 4, what="values")
        await sim.stall_publishing(True)
        stalled = time.time_ns()
        await wait_until_async(lambda: any(r.code == CollectorCode.CONNECTION_LOST for r in rec.readings()),
                               what="the stall to be noticed")
        await sim.stall_publishing(False)
        resumed = time.time_ns()
        await wait_until_async(lambda: {r.tag for r in rec.readings() if r.time > resumed and r.quality == "good"}
                               == {"spindle_speed", "spindle_load"}, timeout=30, what="values after the stall")
    gap = [r for r in rec.readings() if r.code == CollectorCode.CONNECTION_LOST]
    assert {r.tag for r in gap} == {"spindle_speed", "spindle_load"} and all(r.time > stalled for r in gap)
    assert "no publish response" in (driver.ctx.status.last_error or "") or driver.ctx.status.errors["connection"]


async def test_device_down_at_start_is_reported_then_picked_up(start_sim, kit) -> None:
    port = free_port()
    device = kit.device(f"opc.tcp://127.0.0.1:{port}/", [
        {"name": "spindle_speed", "node": "ns=2;s=Machine.Spindle.Speed", "category": "process"}])
    driver, rec = kit.driver(device)
    async with kit.running(driver):
        await wait_until_async(lambda: driver.ctx.status.state == DeviceState.DOWN, what="down")
        assert "connection refused" in (driver.ctx.status.last_error or "")
        await wait_until_async(lambda: len(rec.readings()) == 1, what="the not-connected reading")
        first = rec.readings()[0]
        assert (first.tag, first.quality, first.code) == ("spindle_speed", "bad", CollectorCode.NOT_CONNECTED)
        await start_sim(port=port, update_rate=10)
        await wait_until_async(lambda: any(r.quality == "good" for r in rec.readings()), timeout=30,
                               what="values once the server is up")
    assert sum(r.code == CollectorCode.NOT_CONNECTED for r in rec.readings()) == 1


async def test_wrong_password_fails_clearly(start_sim, kit, tmp_path, caplog) -> None:
    sim = await start_sim(users={"operator": "s3cret"})
    secret = tmp_path / "password"
    secret.write_text("wrong\n")
    device = kit.device(sim.endpoint, tags(sim)[:1], connection={
        "username": "operator", "password_file": str(secret), "allow_plaintext_password": True})
    driver, _ = kit.driver(device)
    with pytest.raises(ConnectFailed) as raised:
        await driver.read_once()
    message = str(raised.value)
    assert "\n" not in message and "cnc-01" in message and "BadUserAccessDenied" in message
    assert "operator" in message and "s3cret" not in message and "wrong" not in message

    async with kit.running(driver):
        await wait_until_async(lambda: driver.ctx.status.errors.get("auth", 0) >= 1, what="the auth error")
    assert "BadUserAccessDenied" in (driver.ctx.status.last_error or "")

    anonymous = kit.device(sim.endpoint, tags(sim)[:1])
    with pytest.raises(ConnectFailed, match="does not accept anonymous logins: BadIdentityTokenRejected"):
        await kit.driver(anonymous)[0].read_once()

    secret.write_text("s3cret\n")
    batch = await kit.driver(device)[0].read_once()
    assert len(batch) == 1 and batch.quality[0] == 0
    # allow_plaintext_password: a loud warning, once for the device however often it reconnects
    warnings = [r.getMessage() for r in caplog.records if "CLEAR TEXT" in r.getMessage()]
    assert warnings == [f"device cnc-01: the password of user 'operator' goes to {sim.endpoint} in CLEAR TEXT "
                        "(security policy None, allow_plaintext_password: true): anyone on the network can read it"]
    assert not any("s3cret" in r.getMessage() or "wrong" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_secured_connection_with_pinned_server_certificate(start_sim, kit, tmp_path, mode) -> None:
    sim = await start_sim(security=("sign", "sign-encrypt"), cert_dir=tmp_path / "server-pki",
                          users={"operator": "s3cret"})
    assert sim.certificate_path is not None
    device = kit.device(sim.endpoint, tags(sim), mode="poll", connection={
        "security": {"policy": "Basic256Sha256", "mode": mode, "server_certificate": str(sim.certificate_path)},
        "username": "operator", "password": "s3cret"})
    driver, rec = kit.driver(device)
    batch = await driver.read_once()
    await rec.emit(batch)
    assert len(rec.readings()) == 5 and all(r.quality == "good" for r in rec.readings())
    # the agent's certificate was generated on first use and is kept for the next connection
    cert = kit.state_dir / "opcua" / "client_cert.der"
    key = kit.state_dir / "opcua" / "client_key.pem"
    assert cert.is_file() and key.is_file() and (key.stat().st_mode & 0o077) == 0
    generated = cert.read_bytes()
    async with kit.running(driver):
        await wait_until_async(lambda: len(rec.readings()) > 5 and driver.ctx.status.state == DeviceState.RUNNING,
                               what="polling over the secured channel")
    assert cert.read_bytes() == generated


async def test_unknown_server_certificate_is_refused_until_trusted(start_sim, kit, tmp_path) -> None:
    sim = await start_sim(security=("sign-encrypt",), cert_dir=tmp_path / "server-pki")
    trust_dir = tmp_path / "trusted"
    trust_dir.mkdir()
    device = kit.device(sim.endpoint, tags(sim)[:1], connection={
        "security": {"policy": "Basic256Sha256", "trust_dir": str(trust_dir)}})
    driver, _ = kit.driver(device)
    with pytest.raises(ConnectFailed) as raised:
        await driver.read_once()
    message = str(raised.value)
    untrusted = sorted((kit.state_dir / "opcua" / "untrusted").glob("*.der"))
    assert len(untrusted) == 1 and untrusted[0].read_bytes() == sim.certificate_path.read_bytes()
    assert message == (f"device cnc-01: server certificate not trusted (SHA-1 {_sha1(untrusted[0])}): copy "
                       f"{untrusted[0]} into {trust_dir} or set security.server_certificate: {untrusted[0]}")

    shutil.copy(untrusted[0], trust_dir)
    batch = await kit.driver(device)[0].read_once()
    assert len(batch) == 1 and batch.quality[0] == 0


async def test_pinned_certificate_of_another_server_is_refused(start_sim, kit, tmp_path) -> None:
    other = await start_sim(security=("sign-encrypt",), cert_dir=tmp_path / "other-pki", update_rate=0)
    sim = await start_sim(security=("sign-encrypt",), cert_dir=tmp_path / "server-pki", update_rate=0)
    device = kit.device(sim.endpoint, tags(sim)[:1], connection={
        "security": {"policy": "Basic256Sha256", "server_certificate": str(other.certificate_path)}})
    with pytest.raises(ConnectFailed, match=r"not the pinned security\.server_certificate"):
        await kit.driver(device)[0].read_once()


async def test_missing_endpoint_and_missing_nodes_are_named(start_sim, kit) -> None:
    sim = await start_sim(security=("none", "sign-encrypt"), update_rate=0)
    signed = kit.device(sim.endpoint, tags(sim)[:1], connection={
        "security": {"policy": "Basic256Sha256", "mode": "Sign", "server_certificate": str(sim.certificate_path)}})
    with pytest.raises(ConnectFailed, match=r"offers no Basic256Sha256/Sign endpoint \(it offers: "
                                            r"Basic256Sha256/SignAndEncrypt, None/None\)"):
        await kit.driver(signed)[0].read_once()

    device = kit.device(sim.endpoint, [{"name": "ghost", "node": "ns=2;s=Machine.NoSuchNode", "category": "process"},
                                       {"name": "speed", "node": sim.node_id("Spindle.Speed"), "category": "process"}],
                        subscription={"publishing_interval": "100ms"})
    driver, rec = kit.driver(device)
    async with kit.running(driver):
        await wait_until_async(lambda: {r.tag for r in rec.readings()} == {"ghost", "speed"}, what="both tags")
        await wait_until_async(lambda: driver.ctx.status.state == DeviceState.DEGRADED, what="degraded")
    ghost = rec.readings("ghost")[0]
    assert (ghost.quality, ghost.code) == ("bad", ua.StatusCodes.BadNodeIdUnknown)
    assert driver.ctx.status.errors["node"] == 1
    assert "BadNodeIdUnknown" in driver.ctx.status.last_error


def _sha1(path) -> str:
    import hashlib

    return hashlib.sha1(path.read_bytes()).hexdigest().upper()


async def test_browse_sends_a_password_only_when_plaintext_is_allowed(start_sim, tmp_path) -> None:
    sim = await start_sim(users={"operator": "s3cret"}, update_rate=0)
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")

    async def browse(*extra: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mos_agent.cli", "browse", sim.endpoint, "--node", sim.node_id("Coolant"),
            "--depth", "2", "--username", "operator", "--password-file", str(secret), *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await browse()
    assert (code, out) == (2, "")
    assert "password would cross the network in clear text: add --allow-plaintext-password" in err
    code, out, err = await browse("--allow-plaintext-password")
    assert code == 0, err
    assert "Temperature" in out and "s3cret" not in out + err
