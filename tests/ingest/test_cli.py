"""``segments push`` input parsing, settings precedence and command registration."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyroaring import BitMap

from ingest.cli import InputError, read_ids
from ingest.settings import IngestSettings, PushSettings
from segments import bitmap as bm
from segments.cli import build_parser


def test_lines_file_with_blank_lines_crlf_and_spaces(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(b"5\r\n1\n\n4294967295\n 7 \n8 9\n")
    seen: list[int] = []
    assert read_ids(str(path), progress=seen.append) == BitMap([1, 5, 7, 8, 9, 2**32 - 1])
    assert sum(seen) == path.stat().st_size


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"1\n2\nx3\n", "line 3: 'x3' is not an integer user ID"),
        (b"1\n2 \xff\n", "line 2: '\ufffd' is not an integer user ID"),
        (b"1\n-2\n", "line 2: user ID -2 is out of range"),
        (b"1\n4294967296\n", "line 2: user ID 4294967296 is out of range"),
    ],
)
def test_lines_file_errors_name_the_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        read_ids(str(path))


def test_lines_file_larger_than_one_read_block(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    ids = range(0, 3_000_000, 3)
    path.write_text("\n".join(map(str, ids)) + "\nnope\n")
    with pytest.raises(InputError, match=f"line {len(ids) + 1}:"):
        read_ids(str(path))
    path.write_text("\n".join(map(str, ids)))
    assert read_ids(str(path)) == BitMap(ids)


def test_csv_by_index_with_header_and_by_name(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("name,user_id\nann,10\nbob,20\n")
    assert read_ids(str(path), column="user_id") == BitMap([10, 20])
    assert read_ids(str(path), column="1") == BitMap([10, 20])
    with pytest.raises(InputError, match="no column named 'uid'"):
        read_ids(str(path), column="uid")
    path.write_text("name,user_id\nann,10\nbob,twenty\n")
    with pytest.raises(InputError, match="line 3: 'twenty'"):
        read_ids(str(path), column="user_id")


def test_roaring_file_and_corrupt_roaring_file(tmp_path: Path) -> None:
    path = tmp_path / "seg.roaring"
    ids = BitMap(range(0, 1_000_000, 7))
    path.write_bytes(bm.serialize(ids))
    assert read_ids(str(path)) == ids
    path.write_bytes(b"not a bitmap")
    with pytest.raises(InputError, match="not a valid portable roaring bitmap"):
        read_ids(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_ids(str(tmp_path / "nope.txt"))


def test_settings_flags_over_env_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert IngestSettings().topic == "segment-updates"
    monkeypatch.setenv("SEGMENTS_TOPIC", "from-env")
    monkeypatch.setenv("SEGMENTS_GROUP", "g-env")
    monkeypatch.setenv("SEGMENTS_KAFKA_OPTIONS", '{"security.protocol": "SSL"}')
    settings = IngestSettings(group="g-flag")
    assert (settings.topic, settings.group, settings.kafka_options) == ("from-env", "g-flag", {"security.protocol": "SSL"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"topic": "bad topic"}, "not a valid Kafka topic"),
        ({"dlq_topic": "segment-updates"}, "must differ"),
        ({"bootstrap_servers": "localhost"}, "not host:port"),
        ({"batch_max_messages": 0}, "greater than or equal to 1"),
        ({"metrics_port": 70000}, "less than or equal to 65535"),
    ],
)
def test_invalid_settings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IngestSettings(**fields)  # type: ignore[arg-type]


def test_push_settings_bound_message_size() -> None:
    with pytest.raises(ValueError):
        PushSettings(max_message_bytes=1000)


def test_ingest_and_push_are_registered_commands(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["ingest", "--topic", "t", "--group", "g", "-X", "a=b"])
    assert (args.topic, args.group, args.kafka_option) == ("t", "g", ["a=b"])
    args = parser.parse_args(["push", "--segment", "s", "--op", "add", "--file", "x.txt"])
    assert (args.segment, args.op, args.format) == ("s", "add", "auto")
    with pytest.raises(SystemExit):
        parser.parse_args(["push", "--segment", "s", "--op", "delete", "--file", "x"])
    assert "invalid choice" in capsys.readouterr().err


def test_ingest_command_reads_env_where_no_flag_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.cli import ingest_settings

    monkeypatch.setenv("SEGMENTS_BOOTSTRAP_SERVERS", "kafka1:9092,kafka2:9092")
    monkeypatch.setenv("SEGMENTS_DLQ_TOPIC", "dead")
    monkeypatch.setenv("SEGMENTS_STORE", "memory://x")
    monkeypatch.setenv("SEGMENTS_METRICS_PORT", "9108")
    monkeypatch.setenv("SEGMENTS_KAFKA_OPTIONS", '{"security.protocol": "SSL"}')
    args = build_parser().parse_args(["ingest", "--dlq-topic", "flagged", "-X", "client.id=me"])
    settings = ingest_settings(args)
    assert settings.bootstrap_servers == "kafka1:9092,kafka2:9092"
    assert settings.dlq_topic == "flagged" and settings.store == "memory://x" and settings.metrics_port == 9108
    assert settings.kafka_options == {"security.protocol": "SSL", "client.id": "me"}  # -X adds to the variable
    assert settings.group == "segments-ingest" and settings.topic == "segment-updates"


def test_invalid_settings_exit_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from segments.cli import main

    with pytest.raises(SystemExit, match="invalid settings: topic"):
        main(["ingest", "--topic", "no spaces allowed", "--store", "memory://"])


def test_metrics_listen_on_loopback_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.cli import ingest_settings

    parser = build_parser()
    assert ingest_settings(parser.parse_args(["ingest", "--metrics-port", "9108"])).metrics_host == "127.0.0.1"
    monkeypatch.setenv("SEGMENTS_METRICS_HOST", "10.0.0.5")
    assert ingest_settings(parser.parse_args(["ingest"])).metrics_host == "10.0.0.5"
    args = parser.parse_args(["ingest", "--metrics-port", "9108", "--metrics-host", "0.0.0.0"])
    assert ingest_settings(args).metrics_host == "0.0.0.0"
