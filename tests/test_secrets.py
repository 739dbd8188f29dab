"""Secrets never show: not in a configuration error (a value of the wrong type, a two-line secret
file), not in a log line or a sink's last error, in any form (as written, repr- or JSON-escaped,
as a bytes literal, one line of it). Every secret field of the agent file and of every bundled
driver's device file is covered, and a new one fails ``test_every_secret_field_is_covered`` until
it is added here."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from mos_agent.config.loader import ConfigErrors, load_config
from mos_agent.config.models import AgentConfig, InfluxSinkConfig
from mos_agent.logs import SecretRedactor
from mos_agent.payload import Payload
from mos_agent.registry import load_driver
from mos_agent.secrets import is_secret_file_key, is_secret_key
from mos_agent.sinks.influxdb import InfluxSink

NUMBER_SECRET = 8675309123456
TWO_LINES = "s3cr3t-first-line-4242\nsecond-line-9090"

OPCUA_DEVICE: dict[str, Any] = {
    "name": "cnc-01", "driver": "opcua", "asset": {"area": "machining"}, "stage": "machining",
    "connection": {"endpoint": "opc.tcp://10.0.0.20:4840", "username": "agent", "allow_plaintext_password": True},
    "tags": [{"name": "spindle_speed", "node": "ns=2;s=Machine.Spindle.Speed", "category": "process"}],
}
MQTT_DEVICE: dict[str, Any] = {
    "name": "env-01", "driver": "mqtt", "asset": {"area": "utility"}, "stage": "utility",
    "connection": {"host": "127.0.0.1", "username": "agent"},
    "tags": [{"name": "temperature", "topic": "plant/env/temp", "category": "environment"}],
}
INFLUX_SINK: dict[str, Any] = {"type": "influxdb", "url": "http://127.0.0.1:8086", "bucket": "factory"}

# (where, path of the key in its file): every secret value key and every secret file key
SECRET_VALUES = [("sink", ("token",)), ("mqtt_sink", ("password",)), ("opcua", ("connection", "password")),
                 ("mqtt", ("connection", "password"))]
SECRET_FILES = [("sink", ("token_file",)), ("mqtt_sink", ("password_file",)),
                ("opcua", ("connection", "password_file")),
                ("mqtt", ("connection", "password_file")),
                ("mqtt", ("connection", "tls", "private_key_password_file"))]


def forms(secret: str) -> list[str]:
    """The ways a secret leaks: as written, escaped, a bytes literal, percent-encoded, one line."""
    return [secret, repr(secret), json.dumps(secret), str(secret.encode()), urllib.parse.quote(secret),
            *secret.splitlines()]


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def _write_config(root: Path, where: str, path: tuple[str, ...], value: Any) -> Path:
    sink = json.loads(json.dumps(INFLUX_SINK))
    mqtt_sink = {"type": "mqtt", "name": "uns", "url": "mqtt://127.0.0.1:1883", "format": "uns"}
    devices = {"opcua": json.loads(json.dumps(OPCUA_DEVICE)), "mqtt": json.loads(json.dumps(MQTT_DEVICE))}
    if where == "sink":
        _set(sink, path, value)
    elif where == "mqtt_sink":
        _set(mqtt_sink, path, value)
    else:
        _set(devices[where], path, value)
        if path[-2:] == ("tls", "private_key_password_file"):  # a key password needs a key and certificate
            for name in ("certificate", "private_key"):
                (root / name).write_text("not used: only readability is checked\n")
                _set(devices[where], (*path[:-1], name), str(root / name))
    (root / "devices").mkdir(parents=True, exist_ok=True)
    for name, device in devices.items():
        (root / "devices" / f"{name}.yaml").write_text(yaml.safe_dump(device))
    agent = root / "agent.yaml"
    agent.write_text(yaml.safe_dump({"agent": {"id": "gw", "site": "plant", "state_dir": str(root / "state"),
                                               "health": "off"},
                                     "devices": "devices/*.yaml",
                                     "sinks": [sink, mqtt_sink] if where == "mqtt_sink" else [sink]}))
    return agent


def _problems(agent: Path) -> str:
    with pytest.raises(ConfigErrors) as raised:
        load_config(agent)
    return str(raised.value)


def _assert_hidden(text: str, secret: str) -> None:
    for form in forms(secret):
        assert form not in text, f"{form!r} shows in {text!r}"


@pytest.mark.parametrize(("where", "path"), SECRET_VALUES, ids=lambda p: ".".join(p) if isinstance(p, tuple) else p)
@pytest.mark.parametrize("value", [NUMBER_SECRET, 8675.309123, [NUMBER_SECRET], {"s3cr3t-key": "s3cr3t-value"}],
                         ids=["int", "float", "list", "mapping"])
def test_a_secret_of_the_wrong_type_is_reported_without_its_value(tmp_path, where, path, value) -> None:
    text = _problems(_write_config(tmp_path, where, path, value))
    assert f"{'.'.join(path)}: expected a string, got " in text
    for secret in (str(NUMBER_SECRET), "8675.309123", "s3cr3t"):
        _assert_hidden(text, secret)


@pytest.mark.parametrize(("where", "path"), SECRET_VALUES, ids=lambda p: ".".join(p) if isinstance(p, tuple) else p)
def test_a_secret_value_of_two_lines_is_refused_without_showing_it(tmp_path, monkeypatch, where, path) -> None:
    monkeypatch.setenv("MOS_TEST_SECRET", TWO_LINES)
    text = _problems(_write_config(tmp_path, where, path, "${MOS_TEST_SECRET}"))
    assert f"{'.'.join(path)}: the value holds 2 lines, and a secret is one line (it is not shown)" in text
    _assert_hidden(text, TWO_LINES)


@pytest.mark.parametrize(("where", "path"), SECRET_FILES, ids=lambda p: ".".join(p) if isinstance(p, tuple) else p)
@pytest.mark.parametrize(("content", "problem"), [
    (TWO_LINES + "\n", "holds 2 lines, and a secret is one line"),
    ("s3cr3t-with\tcontrol-4242\n", "holds a control character, which no secret has"),
], ids=["two lines", "control character"])
def test_a_secret_file_with_more_than_a_line_is_refused_without_showing_it(tmp_path, where, path, content,
                                                                           problem) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(content)
    agent = _write_config(tmp_path, where, path, str(secret_file))
    text = _problems(agent)
    assert f"{'.'.join(path)}: {secret_file} {problem} (its content is not shown)" in text
    _assert_hidden(text, content.strip())
    # the command line says the same, exit 2
    done = subprocess.run([sys.executable, "-m", "mos_agent.cli", "validate", "-c", str(agent)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and problem in done.stderr
    _assert_hidden(done.stdout + done.stderr, content.strip())


def _secret_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every field under ``model`` named like a secret or a secret's file (token, password, key)."""
    found: set[tuple[str, ...]] = set()
    for name, info in model.model_fields.items():
        if any(word in name for word in ("token", "password", "secret")):
            found.add((*prefix, name))
        stack = [info.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                found |= _secret_fields(tp, (*prefix, name))
            else:
                stack.extend(get_args(tp) if get_origin(tp) is not None else ())
    return found


def test_every_secret_field_is_covered() -> None:
    fields = {("sink", *f[1:]) for f in _secret_fields(AgentConfig) if f[:1] == ("sinks",)}
    fields |= {(where, *f) for where in ("opcua", "mqtt") for f in _secret_fields(load_driver(where).device_model)}
    # every sink type's fields are "sink" fields here: the MQTT sink's password is one of them
    covered = {("sink" if where == "mqtt_sink" else where, *path) for where, path in SECRET_VALUES + SECRET_FILES}
    # the switch that allows a plain-text password is no secret
    assert fields - {("opcua", "connection", "allow_plaintext_password")} == covered
    assert all(is_secret_key(path[-1]) for _, path in SECRET_VALUES)
    assert all(is_secret_file_key(path[-1]) for _, path in SECRET_FILES)
    assert not is_secret_key("allow_plaintext_password") and not is_secret_key("username")


def test_the_log_hides_a_secret_in_every_form() -> None:
    redactor = SecretRedactor([TWO_LINES, "tok-5f3a9c1e"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(redactor)
    log = logging.getLogger("test.secrets")
    log.addHandler(handler)
    try:
        for form in [*forms(TWO_LINES), "url?token=tok-5f3a9c1e&x=1"]:
            log.warning("the store said: %s", form)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("the store said: ") == len(forms(TWO_LINES)) + 1 and "***" in text
    _assert_hidden(text, TWO_LINES)
    assert "tok-5f3a9c1e" not in text


def test_a_sink_error_caused_by_a_two_line_token_does_not_show_it(victoria) -> None:
    """The loader refuses such a token; a sink built around it anyway (a token file rewritten
    between a check and a start) must neither send it (its line break would split the request)
    nor show it: the refusal names the header, not its value."""
    config = InfluxSinkConfig(type="influxdb", url=victoria.url, bucket="factory", token=TWO_LINES, gzip=False,
                              timeout=5.0)
    sink = InfluxSink("influxdb", config)
    with pytest.raises(ValueError, match="Authorization header's value has a line break") as raised:
        sink.write(Payload(1, plain=b"process value=1 1\n"))
    assert not sink._connection.is_open  # refused before connecting
    _assert_hidden(sink.redact(f"{type(raised.value).__name__}: {raised.value}"), TWO_LINES)
    _assert_hidden(str(raised.value), TWO_LINES)


def test_a_device_error_that_quotes_a_secret_shows_it_hidden_in_the_status() -> None:
    from mos_agent.logs import redact_secrets, register_secrets

    register_secrets(["opc-pw-7f3a9c"])
    said = "BadUserAccessDenied: password b'opc-pw-7f3a9c' refused"
    assert redact_secrets(said) == "BadUserAccessDenied: password b'***' refused"
    assert redact_secrets(None) is None
