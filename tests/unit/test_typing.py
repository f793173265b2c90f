"""mypy knows that ``send`` takes the task's own model and nothing else."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mypy import api

SNIPPET = """
from leveret import App
from tasks.contracts import Receipt, Thumbnail, send_receipt

async def producer(app: App, receipt: Receipt, thumb: Thumbnail) -> None:
    await app.send(send_receipt, receipt)
    await app.send(send_receipt, thumb)
    await app.send_many(send_receipt, [thumb])
"""


def test_mypy_rejects_the_wrong_model(tmp_path: Path) -> None:
    source = tmp_path / "producer_snippet.py"
    source.write_text(textwrap.dedent(SNIPPET))
    out, _err, status = api.run(
        ["--strict", "--no-incremental", "--follow-imports=silent", str(source)]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1, out
    assert len(errors) == 2, out
    assert ":7:" in errors[0], out
    assert '"send"' in errors[0], out
    assert ":8:" in errors[1], out
    assert '"send_many"' in errors[1], out
