"""Credentials: the secret from a file, the token's own room checked against --room."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncmon.cli import main
from syncmon.errors import ConfigError
from syncmon.live.config import LiveKitCredentials, read_secret_file, token_room
from syncmon.live.token import monitor_token

SECRET = "a-secret-of-the-right-length-0123456789abc"


def test_token_room_reads_the_grant() -> None:
    tok = monitor_token(api_key="k", api_secret=SECRET, room="support-42", identity="m")
    assert token_room(tok) == "support-42"
    assert token_room("not-a-jwt") is None
    assert token_room("a.b.c") is None


def test_secret_file_is_read_stripped_and_bad_files_are_named(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text(SECRET + "\n")
    assert read_secret_file(str(f)) == SECRET
    creds = LiveKitCredentials.resolve(
        url="ws://127.0.0.1:7880", api_key="k", api_secret=None, token=None, api_secret_file=str(f)
    )
    assert creds.api_secret == SECRET and SECRET not in repr(creds)
    with pytest.raises(ConfigError, match="--api-secret-file .* cannot be read"):
        read_secret_file(str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_file(str(tmp_path / "empty"))


def test_watch_refuses_a_token_for_another_room(capsys: pytest.CaptureFixture[str]) -> None:
    tok = monitor_token(api_key="k", api_secret=SECRET, room="room-a", identity="m")
    code = main(
        ["watch", "--url", "ws://127.0.0.1:9", "--room", "room-b", "--token", tok,
         "--metrics-addr", "127.0.0.1:0"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "grants room 'room-a', not --room 'room-b'" in err
    assert tok not in err
