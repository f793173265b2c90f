"""mypy knows that ``app.sync.send`` takes the task's own model, as ``send`` does."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mypy import api

SNIPPET = """
from leveret import App
from tasks.contracts import Receipt, Thumbnail, send_receipt

def producer(app: App, receipt: Receipt, thumb: Thumbnail) -> None:
    task_id: str = app.sync.send(send_receipt, receipt, priority=3, delay=1.5)
    ids: list[str] = app.sync.send_many(send_receipt, [receipt])
    app.sync.send(send_receipt, thumb)
    app.sync.send_many(send_receipt, [thumb])
    app.sync.check(send_receipt, thumb)
    wrong: int = app.sync.send(send_receipt, receipt)
"""


def test_mypy_rejects_the_wrong_model_in_sync_sends(tmp_path: Path) -> None:
    source = tmp_path / "sync_producer_snippet.py"
    source.write_text(textwrap.dedent(SNIPPET))
    out, _err, status = api.run(
        ["--strict", "--no-incremental", "--follow-imports=silent", str(source)]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1, out
    assert [e.split(":")[1] for e in errors] == ["8", "9", "10", "11"], out
    assert '"send"' in errors[0], out
    assert '"send_many"' in errors[1], out
    assert '"check"' in errors[2], out
    assert "Incompatible types in assignment" in errors[3], out
