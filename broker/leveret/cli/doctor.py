"""``doctor``: check a live broker against an app; one line per problem with its fix.

Exit 0 if nothing is wrong, 1 if anything is; ``--json`` prints the findings as a
JSON list for CI. Checks that need the management HTTP API (bindings, policies,
permissions, per-queue consumer timeouts) print "skipped: ..." when it does not answer
(on stderr with ``--json``); a skipped check does not fail the run. Nothing on the
broker is changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from leveret.app import App
from leveret.cli.common import add_app_argument, console, env_default, load_app, out
from leveret.doctor import Diagnosis, examine


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
    doctor.add_argument(
        "--management-url",
        default=env_default("management_url", None),
        help="the RabbitMQ management API, e.g. http://user:pass@host:15672/ (env "
        "LEVERET_MANAGEMENT_URL; default: the broker's host on 15672 with the AMQP "
        "credentials)",
    )
    doctor.set_defaults(run=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    found = asyncio.run(_examine(app, args.management_url))
    findings = found.findings
    if args.json:
        out.print_json(json.dumps([f.as_dict() for f in findings]))
    elif findings:
        for finding in findings:
            out.print(finding.line(), highlight=False, soft_wrap=True)
    for skipped in found.skipped:
        (console if args.json else out).print(
            f"skipped: {skipped}", highlight=False, soft_wrap=True
        )
    if not args.json and not findings:
        out.print(f"ok: the broker has everything namespace {app.settings.namespace!r} needs")
    return 1 if findings else 0


async def _examine(app: App, management_url: str | None) -> Diagnosis:
    try:
        return await examine(app, management_url)
    finally:
        await app.close()
