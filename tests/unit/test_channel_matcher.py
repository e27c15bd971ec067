"""`Principal.may_join`: one compiled regex per pattern set, exactly `fnmatchcase`."""

from __future__ import annotations

from fnmatch import fnmatchcase

from hypothesis import given, settings
from hypothesis import strategies as st
from wsfleet_gateway.protection.auth import Principal

GLOB = st.text(alphabet="ab*?[]!-.:", max_size=6)
CHANNEL = st.text(alphabet="ab.:-*?[]", max_size=6)


@settings(max_examples=500)
@given(patterns=st.lists(GLOB, max_size=3), channel=CHANNEL)
def test_may_join_is_fnmatchcase_over_the_patterns(patterns: list[str], channel: str) -> None:
    principal = Principal("u", channels=tuple(patterns))
    assert principal.may_join(channel) == any(fnmatchcase(channel, p) for p in patterns)


def test_no_pattern_allows_nothing_and_star_allows_all() -> None:
    assert not Principal("u", channels=()).may_join("wedding-1")
    assert Principal("u").may_join("wedding-1")
    assert not Principal("u", channels=("wedding-*",)).may_join("xwedding-1")
