"""Outbox file names: one key, one name; only a name; readable for the plain keys."""

import pytest

from workers.channels.outbox import _safe_name


def test_plain_keys_stay_readable():
    assert _safe_name("birthday:DEMO0019:2027") == "birthday_DEMO0019_2027"
    assert _safe_name("winback:LAPSED:2027-01-01:2") == "winback_LAPSED_2027-01-01_2"


@pytest.mark.parametrize("first, second", [
    ("birthday:Z/1:2027", "birthday:Z_1:2027"),
    ("birthday:Z_1:2027", "birthday:Z:1:2027"),
    ("birthday:Z%5F1:2027", "birthday:Z_1:2027"),
    ("birthday:Zé:2027", "birthday:Z%C3%A9:2027"),
    ("a:b:" + "x" * 300, "a:b:" + "x" * 299 + "y"),
])
def test_two_keys_never_share_a_name(first, second):
    assert _safe_name(first) != _safe_name(second)


@pytest.mark.parametrize("key", ["birthday:../../etc/passwd:2027", "birthday:..:2027", ".hidden", "a:\x00\n:b",
                                 "birthday:" + "/" * 500 + ":2027"])
def test_a_name_is_only_a_name(key):
    name = _safe_name(key)
    assert "/" not in name and "\\" not in name and "." not in name and "\x00" not in name and "\n" not in name
    assert 0 < len(name + ".json") <= 255
