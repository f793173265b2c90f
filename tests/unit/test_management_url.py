"""Where ``leveret doctor`` looks for the management API, and what it prints of it."""

from __future__ import annotations

from leveret.doctor.management import Management, default_url, masked


def test_the_default_url_and_masking() -> None:
    assert default_url("amqp://u:p@rabbit.svc:5672/prod") == "http://u:p@rabbit.svc:15672/"
    assert masked("http://u:p%40ss@h:15672/") == "http://u:***@h:15672/"
    assert masked("http://h:15672/") == "http://h:15672/"
    api = Management.for_amqp("amqp://u:pw@h:5672/prod", "https://m.example:443/")
    assert (api.url, api.vhost) == ("https://u:pw@m.example:443/", "prod")
