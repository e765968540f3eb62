"""``tutti join LINK``: reading an invite link, asking for what the command line left out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tutti.client.connection import JoinError
from tutti.client.invite import ask_name, ask_part, parse_invite_link, resolve_join
from tutti.errors import ExitCode


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("https://choir.example.org/j/U7D8VE", ("https://choir.example.org", "U7D8VE")),
        ("https://choir.example.org/j/U7D8VE/", ("https://choir.example.org", "U7D8VE")),
        ("http://10.0.0.5:8765/j/ab2cd3", ("http://10.0.0.5:8765", "ab2cd3")),
        ("choir.example.org/j/U7D8VE", ("http://choir.example.org", "U7D8VE")),
        ("https://example.org/tutti/j/U7D8VE", ("https://example.org/tutti", "U7D8VE")),
        ("https://choir.example.org", None),
        ("https://choir.example.org/jj/U7D8VE", None),
    ],
)
def test_invite_links_give_the_server_and_code(link: str, expected: tuple[str, str] | None) -> None:
    assert parse_invite_link(link) == expected


def _answers(*lines: str) -> Iterator[str]:
    yield from lines


def test_name_and_part_are_asked_until_they_are_usable(capsys: pytest.CaptureFixture[str]) -> None:
    answers = _answers("", "  Ann  ")
    assert ask_name(lambda _prompt: next(answers)) == "Ann"
    answers = _answers("7", "bass", "b", "2")
    assert ask_part(("S", "A", "T", "B"), lambda _prompt: next(answers)) == "B"
    answers = _answers("2")
    assert ask_part(("S", "A", "T", "B"), lambda _prompt: next(answers)) == "A"
    out = capsys.readouterr().out
    assert "Please type your name" in out and "a number from 1 to 4" in out


def test_without_a_terminal_what_is_missing_is_a_usage_error() -> None:
    link = "https://choir.example.org/j/U7D8VE"
    assert resolve_join(link, None, "Ann", None, interactive=False) == (
        "https://choir.example.org", "U7D8VE", "Ann", None
    )  # fmt: skip
    with pytest.raises(JoinError, match="--name") as err:
        resolve_join(link, None, None, "S", interactive=False)
    assert err.value.exit_code == ExitCode.USAGE
    with pytest.raises(JoinError, match="invite link") as err:
        resolve_join("https://choir.example.org", None, "Ann", "S", interactive=False)
    assert err.value.exit_code == ExitCode.USAGE
    with pytest.raises(JoinError, match="leave --code out") as err:
        resolve_join(link, "ABCDEF", "Ann", "S", interactive=False)
    assert resolve_join(link, "u7d8ve", "Ann", "S", interactive=False)[1] == "U7D8VE"
