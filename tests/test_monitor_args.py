"""The monitor's flags reach the room monitors' options; bad values are refused by name."""

from __future__ import annotations

import pytest

from syncmon.cli import build_parser
from syncmon.cli.monitor import watch_options


@pytest.mark.parametrize("command", ["watch", "worker"])
def test_content_every_reaches_the_options(command: str) -> None:
    base = [command] + (["--room", "r"] if command == "watch" else [])
    assert watch_options(build_parser().parse_args(base)).content_every_s == 2.0
    args = build_parser().parse_args([*base, "--content-every", "1"])
    assert watch_options(args).content_every_s == 1.0


@pytest.mark.parametrize("value", ["0", "2.5", "soon"])
def test_content_every_out_of_range_is_refused(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["watch", "--room", "r", "--content-every", value])
    assert e.value.code == 2
    assert "--content-every" in capsys.readouterr().err
