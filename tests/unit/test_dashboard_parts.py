"""The dashboard's parts that need no broker: message fingerprints, settings, and the
management API's address derived from the AMQP URL."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leveret.dashboard.fingerprint import fingerprint, shape
from leveret.dashboard.queues import management_url_for
from leveret.dashboard.settings import DashboardSettings
from leveret.errors import ConfigError


@given(st.ip_addresses(v=4), st.ip_addresses(v=4), st.integers(0, 65535))
def test_messages_that_differ_by_address_or_number_share_a_fingerprint(
    a: object, b: object, port: int
) -> None:
    first = fingerprint("db.query", "TimeoutError", f"timeout connecting to {a}:{port}")
    second = fingerprint("db.query", "TimeoutError", f"timeout connecting to {b}:5432")
    assert first == second


@given(
    st.uuids(),
    st.integers(-(10**9), 10**9),
    st.from_regex(r"[a-z0-9._+-]{1,12}@[a-z0-9-]{1,10}\.(com|org|co\.uk)", fullmatch=True),
)
def test_ids_amounts_and_addresses_are_placeholders(uid: object, n: int, email: str) -> None:
    assert shape(f"order {n} of {email} ({uid}) failed") == "order <n> of <email> (<uuid>) failed"


def test_different_causes_stay_apart() -> None:
    assert fingerprint("t", "KeyError", "'width'") != fingerprint("t", "ValueError", "'width'")
    assert fingerprint("a", "E", "x") != fingerprint("b", "E", "x")
    assert fingerprint("t", "E", "disk full") != fingerprint("t", "E", "connection refused")
    assert shape(None) == ""


def test_credentials_are_never_defaulted_and_must_pair() -> None:
    settings = DashboardSettings()
    assert settings.token is None
    assert settings.user is None
    assert not settings.can_change
    with pytest.raises(ConfigError, match="both"):
        DashboardSettings(user="oncall")
    with pytest.raises(ConfigError, match="16 characters"):
        DashboardSettings(token="short")
    assert not DashboardSettings(token="x" * 16, read_only=True).can_change
    assert "x" * 16 not in repr(DashboardSettings(token="x" * 16))


def test_management_url_follows_the_amqp_url() -> None:
    assert management_url_for("amqp://u:p%40ss@rabbit:5672/prod") == "http://u:p%40ss@rabbit:15672"
    assert management_url_for("amqps://a:b@n1,amqps://a:b@n2").startswith("https://a:b@n1:15672")
