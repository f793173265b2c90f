"""``doctor``: check a live broker against an app; one line per problem with its fix.

Exit 0 if nothing is wrong, 1 if anything is; ``--json`` prints the findings as a
JSON list for CI. Nothing on the broker is changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from leveret.app import App
from leveret.cli.common import add_app_argument, env_default, load_app, out
from leveret.doctor import Finding, diagnose


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor", help="check the broker against the app: exit 1 and one line per problem"
    )
    add_app_argument(doctor)
    doctor.add_argument(
        "--json",
        action="store_true",
        default=env_default("json", False),
        help="print the findings as a JSON list (env LEVERET_JSON)",
    )
    doctor.set_defaults(run=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    findings = asyncio.run(_diagnose(app))
    if args.json:
        out.print_json(json.dumps([f.as_dict() for f in findings]))
    elif findings:
        for finding in findings:
            out.print(finding.line(), highlight=False, soft_wrap=True)
    else:
        out.print(f"ok: the broker has everything namespace {app.settings.namespace!r} needs")
    return 1 if findings else 0


async def _diagnose(app: App) -> list[Finding]:
    try:
        return await diagnose(app)
    finally:
        await app.close()
