"""The tests of this repository's tasks use the leveret pytest plugin, as the README
tells users to: name the app under test, and the fixtures do the rest."""

from __future__ import annotations

import pytest

from leveret import App
from tasks.handlers import app


@pytest.fixture
def leveret_app() -> App:
    return app
