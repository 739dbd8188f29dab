"""The status report: the JSON that /status serves keeps its keys, reads back into the same
report (what ``mos-agent status`` renders), and says why the agent is unhealthy."""

from __future__ import annotations

import json

from mos_agent.status import (
    AgentInfo,
    BufferStats,
    ContractStats,
    DeviceState,
    DeviceStats,
    KpiFigures,
    KpiStats,
    PipelineStats,
    SinkState,
    SinkStats,
    StatusReport,
)


def _report() -> StatusReport:
    return StatusReport(
        agent=AgentInfo(id="gw-1", site="plant", version="0.1.0", pid=42, uptime_s=3.5, ready=True),
        devices=[DeviceStats(name="press-01", driver="modbus", asset="plant/stamping/press-01",
                             state=DeviceState.RUNNING, errors={"timeout": 2}, points_read=10, last_value_time=1.5)],
        pipeline=PipelineStats(committed_points=10, points_per_s=2.0),
        buffer=BufferStats(path="/s/buffer.sqlite", points=5, moved_aside=["/s/old"]),
        sinks=[SinkStats(name="influxdb", type="influxdb", state=SinkState.DRAINING, lag_points=5,
                         last_error="HTTP 503")],
        contracts=[ContractStats(id="mdcg-2026-017", consumer="MDCG", sink="datacentre", status="active",
                                 datasets=["press-01"], resolution="1m", points_released=3)],
        kpi=[KpiStats(equipment="press-01", asset="plant/stamping/press-01", device="press-01",
                      current=KpiFigures(shift="night", start=10.0, end=20.0, at=15.0, kpi={"oee": 61.5, "pq": 120}),
                      completed=[KpiFigures(shift="day", start=0.0, end=10.0, at=10.0, final=True,
                                            kpi={"availability": 90.0})])],
        time=100.0,
    )


def test_the_json_keeps_the_keys_scripts_read() -> None:
    data = json.loads(json.dumps(_report().to_dict()))
    assert set(data) == {"agent", "devices", "pipeline", "buffer", "sinks", "contracts", "kpi", "kpi_engine",
                         "time"}
    assert set(data["agent"]) == {"id", "site", "version", "pid", "uptime_s", "ready"}
    assert set(data["pipeline"]) == {"committed_points", "points_per_s", "handoff_queue", "commit_failures"}
    assert {"name", "driver", "asset", "state", "last_error", "last_error_time", "errors", "overruns", "source_names",
            "skipped_polls", "skipped_points", "series", "points_read", "points_kept", "points_bad", "points_per_s",
            "last_value_time", "sparkplug"} == set(data["devices"][0])
    assert {"path", "points", "bytes", "rows", "max_size", "overflow", "oldest_age_s", "dropped_points",
            "overflow_episodes", "overflowing", "dead_letter_rows", "dead_letter_points",
            "moved_aside", "disk_free_bytes", "disk_total_bytes", "min_free_space", "disk_full", "disk_full_episodes",
            "disk_full_reason"} == set(data["buffer"])
    assert {"name", "type", "state", "sent_points", "sent_batches", "sent_requests", "sent_bytes", "retried",
            "dead_lettered_points", "last_error", "last_error_time", "last_success_time", "lag_points",
            "lag_seconds", "live_lag_points", "live_lag_seconds", "backlog_points",
            "dropped_points", "late_points", "open_windows", "mqtt"} == set(data["sinks"][0])
    assert {"id", "consumer", "sink", "status", "valid_from", "valid_to", "datasets", "resolution",
            "points_released", "last_release"} == set(data["contracts"][0])
    assert {"equipment", "asset", "device", "current", "last_complete", "completed"} == set(data["kpi"][0])
    assert data["kpi"][0]["current"]["kpi"] == {"oee": 61.5, "pq": 120} and data["kpi"][0]["last_complete"] is None
    # enums travel as their plain values
    assert data["devices"][0]["state"] == "running" and data["sinks"][0]["state"] == "draining"


def test_the_json_reads_back_into_the_same_report() -> None:
    report = _report()
    again = StatusReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report
    assert again.sinks[0].state is SinkState.DRAINING and again.devices[0].state is DeviceState.RUNNING


def test_keys_a_version_does_not_know_are_ignored_and_missing_ones_default() -> None:
    data = _report().to_dict()
    data["sinks"][0]["a_future_counter"] = 7
    data["a_future_section"] = {"x": 1}
    data["devices"][0]["state"] = "hibernating"
    del data["pipeline"]["commit_failures"]
    report = StatusReport.from_dict(data)
    assert report.sinks[0].lag_points == 5
    assert report.devices[0].state == "hibernating"  # a newer agent's state is shown as it is
    assert report.pipeline == PipelineStats(committed_points=10, points_per_s=2.0)


def test_problems_name_what_is_unhealthy() -> None:
    report = _report()
    assert report.problems() == []
    report.devices[0].state = DeviceState.DOWN
    report.devices[0].last_error = "connection refused"
    report.sinks[0].state = SinkState.AUTH_FAILED
    report.agent.ready = False
    assert report.problems() == ["not ready", "device press-01 down: connection refused",
                                 "sink influxdb auth_failed: HTTP 503"]


def test_an_mqtt_sink_reports_its_session_and_reads_back() -> None:
    from mos_agent.status import MqttSinkStats, SinkStats

    report = _report()
    report.sinks.append(SinkStats(name="scada", type="mqtt", mqtt=MqttSinkStats(
        format="sparkplug", broker="127.0.0.1:1883", connected=True, connections=2, messages_published=40,
        group_id="changwon", edge_node_id="gw-1", bd_seq=7, births=3, rebirth_requests=1)))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["sinks"][-1]["mqtt"]["bd_seq"] == 7 and data["sinks"][0]["mqtt"] is None
    again = StatusReport.from_dict(data)
    assert again == report and isinstance(again.sinks[-1].mqtt, MqttSinkStats)

    from rich.console import Console

    from mos_agent.commands.status import render

    console = Console(record=True, width=200)
    render(again, console)
    assert ("scada: sparkplug → 127.0.0.1:1883, connected, 40 messages, edge node changwon/gw-1, bdSeq 7, 3 births"
            in console.export_text())


def test_polls_lost_to_overruns_show_as_numbers_in_status_and_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from rich.console import Console

    from mos_agent.commands.status import render
    from mos_agent.health import StatusCollector

    report = _report()
    device = report.devices[0]
    device.overruns, device.skipped_polls, device.skipped_points = 2, 19, 1900
    report.sinks[0].sent_bytes = 12345

    class Source:
        def status(self) -> StatusReport:
            return report

        def health(self) -> tuple[bool, list[str]]:
            return True, []

    registry = CollectorRegistry()
    registry.register(StatusCollector(Source()))
    metrics = generate_latest(registry).decode()
    assert 'mos_agent_poll_overruns_total{device="press-01",driver="modbus"} 2.0' in metrics
    assert 'mos_agent_polls_skipped_total{device="press-01",driver="modbus"} 19.0' in metrics
    assert 'mos_agent_points_skipped_total{device="press-01",driver="modbus"} 1900.0' in metrics
    assert 'mos_agent_bytes_sent_total{sink="influxdb",type="influxdb"} 12345.0' in metrics

    console = Console(record=True, width=200)
    render(StatusReport.from_dict(json.loads(json.dumps(report.to_dict()))), console)
    assert "1900 (19 polls)" in console.export_text()


def test_a_sparkplug_device_reports_what_it_learnt_and_ignored_and_reads_back() -> None:
    import io

    from rich.console import Console

    from mos_agent.commands.status import render
    from mos_agent.status import SparkplugInStats

    report = _report()
    sparkplug = SparkplugInStats(
        group_id="plant-b", edge_node="+", edge_nodes_online=2, births=5, metrics=40, unmatched_metrics=7,
        unmatched_examples=["Vibration/RMS", "Secret Recipe"], ignored_points=120, rebirth_requests=3, seq_gaps=1,
        unknown_aliases=2, dropped_points=4)
    report.devices.append(DeviceStats(name="node-7", driver="mqtt", state=DeviceState.RUNNING, sparkplug=sparkplug))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["devices"][0]["sparkplug"] is None and data["devices"][1]["sparkplug"]["unmatched_metrics"] == 7
    again = StatusReport.from_dict(data)
    assert again == report
    console = Console(file=io.StringIO(), width=300)
    render(again, console)
    shown = console.file.getvalue()
    assert "node-7: Sparkplug B plant-b/+, 2 edge node(s) online" in shown
    assert "3 rebirth requests (1 seq gaps, 2 unknown aliases" in shown
    assert "7 metrics match no pattern (Vibration/RMS, Secret Recipe…), 120 values ignored" in shown

