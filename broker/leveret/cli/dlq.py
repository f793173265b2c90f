"""``dlq``: list, summarise, show, replay, purge, export and import dead letters.

Every subcommand takes ``--app MODULE:APP`` (its queues are the default scope) or
``--queue``; the broker and namespace come from LEVERET_URL and LEVERET_NAMESPACE.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.prompt import Confirm
from rich.table import Table

from leveret.cli.common import console, env_default, load_app, out
from leveret.deadletter import DeadLetter, DeadLetters, Filter, Group, MoveReport, Report
from leveret.deadletter.codec import properties_dict, to_json
from leveret.deadletter.letter import REASONS

T = TypeVar("T")

DEFAULT_ROWS = 100

#: ``show`` prints at most this much of a body it cannot show as JSON: a dead letter
#: may be anything a publisher sent, and a terminal is no place for all of it.
MAX_RAW_SHOWN = 2000


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = commands.add_parser(
        "dlq",
        help="inspect, replay, purge, export and import dead letters",
        description="Dead letters: the tasks that could not be run, with why.",
    )
    sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    listing = sub.add_parser("list", help="a table of dead letters (or --summary)")
    _common(listing, filters=True)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument(
        "--limit",
        type=int,
        help=f"rows to show (default {DEFAULT_ROWS} in the table, all with --json; 0: all)",
    )
    listing.add_argument(
        "--summary", action="store_true", help="counts by task and exception type instead"
    )
    listing.set_defaults(run=run_list)

    summary = sub.add_parser("summary", help="what broke, how often: counts by task and error")
    _common(summary, filters=True)
    summary.add_argument("--json", action="store_true", help="one JSON object per line")
    summary.set_defaults(run=run_summary)

    show = sub.add_parser("show", help="one dead letter whole: headers, payload, traceback")
    show.add_argument("id", help="its task id, or the start of it")
    _common(show, filters=False)
    show.add_argument("--json", action="store_true", help="as JSON, headers type-tagged")
    show.set_defaults(run=run_show)

    replay = sub.add_parser("replay", help="send matching dead letters back to their queue")
    _common(replay, filters=True)
    replay.add_argument("--dry-run", action="store_true", help="count, change nothing")
    replay.add_argument("--limit", type=int, help="replay at most this many")
    replay.add_argument("--rate", type=_rate, help="at most this many a second, e.g. 50 or 50/s")
    replay.add_argument("--to", metavar="QUEUE", help="replay into this queue instead")
    replay.set_defaults(run=run_replay)

    purge = sub.add_parser("purge", help="delete matching dead letters")
    _common(purge, filters=True)
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--limit", type=int, help="delete at most this many")
    purge.add_argument("--dry-run", action="store_true", help="count, change nothing")
    purge.set_defaults(run=run_purge)

    export = sub.add_parser("export", help="write dead letters to a JSON-lines file")
    export.add_argument("file", help="where to write ('-' for standard output)")
    _common(export, filters=True)
    export.set_defaults(run=run_export)

    load = sub.add_parser("import", help="publish the dead letters of an export file")
    load.add_argument("file", help="a file written by `dlq export` ('-' for standard input)")
    _common(load, filters=False, queue_help="import into this queue's dead letters instead")
    load.add_argument("--dry-run", action="store_true", help="check the file, publish nothing")
    load.set_defaults(run=run_import)


def _common(
    parser: argparse.ArgumentParser,
    *,
    filters: bool,
    queue_help: str = "a work queue whose dead letters to use (repeat, or comma-separate)",
) -> None:
    parser.add_argument(
        "--app",
        metavar="MODULE:APP",
        default=env_default("app", None),
        help="the app whose queues to use, e.g. tasks.handlers:app (env LEVERET_APP)",
    )
    parser.add_argument(
        "--queue",
        "-q",
        action="append",
        help=queue_help,
    )
    if not filters:
        return
    group = parser.add_argument_group("filters (all must hold)")
    group.add_argument(
        "--task", action="append", metavar="PATTERN", help="task name; wildcards: 'emails.*'"
    )
    group.add_argument(
        "--error-type",
        action="append",
        metavar="PATTERN",
        help="exception class, short or dotted; wildcards",
    )
    group.add_argument(
        "--match", metavar="TEXT", help="text in the error type or message (any case)"
    )
    group.add_argument(
        "--reason",
        action="append",
        metavar="REASON",
        help=f"why it died: {', '.join(REASONS)}",
    )
    group.add_argument("--id", action="append", metavar="ID", help="task id, or the start of one")
    group.add_argument("--older-than", metavar="AGE", help="died before: 2h, 3d, or an ISO time")
    group.add_argument("--newer-than", metavar="AGE", help="died after: 15m, 1d, or an ISO time")


def _rate(text: str) -> float:
    value = text.strip().lower().removesuffix("/s")
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 50 or 50/s)") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError("the rate must be above 0")
    return rate


def _emit(obj: Any) -> None:
    """One JSON line on standard output, unwrapped and uncoloured, for scripts."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _queues(args: argparse.Namespace) -> list[str]:
    return [q.strip() for item in args.queue or [] for q in item.split(",") if q.strip()]


def _filter(args: argparse.Namespace) -> Filter:
    return Filter.of(
        queue=_queues(args),
        task=args.task,
        error_type=args.error_type,
        match=args.match,
        reason=args.reason,
        id=args.id,
        older_than=args.older_than,
        newer_than=args.newer_than,
    )


def _run(args: argparse.Namespace, operation: Callable[[DeadLetters], Awaitable[T]]) -> T:
    source = load_app(args.app) if args.app else None

    async def main() -> T:
        try:
            async with DeadLetters(source) as dead:
                return await operation(dead)
        finally:
            if source is not None:
                await source.close()

    return asyncio.run(main())


# -- list and summary ---------------------------------------------------------------


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = max((datetime.now(tz=UTC) - moment).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} ({_ago(moment)})"


def _short(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def run_list(args: argparse.Namespace) -> int:
    if args.summary:
        return run_summary(args)
    where = _filter(args)
    limit = args.limit if args.limit is not None else (None if args.json else DEFAULT_ROWS)
    if limit == 0:
        limit = None

    async def listing(dead: DeadLetters) -> tuple[list[DeadLetter], int]:
        rows: list[DeadLetter] = []
        matching = 0
        async with contextlib.aclosing(dead.scan(where)) as letters:
            async for letter in letters:
                matching += 1
                if args.json:
                    if limit is None or matching <= limit:
                        _emit(letter.summary())
                    elif limit is not None:
                        break
                elif limit is None or len(rows) < limit:
                    rows.append(letter)
        return rows, matching

    rows, matching = _run(args, listing)
    if args.json:
        return 0
    table = Table("queue", "task", "id", "att", "error", "failed", title="Dead letters")
    for letter in rows:
        table.add_row(
            escape(letter.queue),
            escape(letter.task or "-"),
            escape(letter.id[:12]),
            str(letter.attempts) if letter.attempts is not None else "-",
            escape(_short(letter.describe(), 70)),
            _when(letter.failed_at),
        )
    if rows:
        out.print(table)
    shown = f"{len(rows):,} of {matching:,}" if len(rows) < matching else f"{matching:,}"
    console.print(
        f"{shown} dead letter{'' if matching == 1 else 's'} matching {escape(where.describe())}"
        + ("; --limit 0 shows all" if len(rows) < matching else "")
    )
    return 0


def run_summary(args: argparse.Namespace) -> int:
    where = _filter(args)
    groups: list[Group] = _run(args, lambda dead: dead.summary(where))
    if args.json:
        for group in groups:
            _emit(group.as_dict())
        return 0
    table = Table("count", "task", "error type", "queues", "first", "last", "latest error")
    table.title = "What broke, how often"
    for group in groups:
        table.add_row(
            f"{group.count:,}",
            escape(group.task or "-"),
            escape(group.kind),
            escape(", ".join(sorted(group.queues))),
            _ago(group.first),
            _ago(group.last),
            escape(_short(group.example, 50)),
        )
    if groups:
        out.print(table)
    total = sum(g.count for g in groups)
    console.print(f"{_letters(total)} matching {escape(where.describe())}")
    return 0


# -- show ---------------------------------------------------------------------------


def run_show(args: argparse.Namespace) -> int:
    where = Filter.of(queue=_queues(args))
    found: list[DeadLetter] = _run(args, lambda dead: dead.find(args.id, where))
    if not found:
        console.print(f"[bold red]error:[/] no dead letter with an id starting {args.id!r}")
        return 1
    for letter in found:
        if args.json:
            _emit(_full(letter))
        else:
            _print_letter(letter)
    return 0


def _full(letter: DeadLetter) -> dict[str, Any]:
    payload, why_not = letter.read_payload()
    return {
        **letter.summary(),
        "traceback": letter.traceback,
        "payload": payload,
        "payload_error": why_not,
        "body": base64.b64encode(letter.body).decode("ascii"),
        "properties": {k: to_json(v) for k, v in properties_dict(letter.properties).items()},
        "headers": {k: to_json(v) for k, v in letter.headers.items()},
    }


def _print_letter(letter: DeadLetter) -> None:
    out.rule(f"[bold]{escape(letter.task or '(no task name)')}[/]  {escape(letter.id)}")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    rows = [
        ("queue", letter.queue),
        ("reason", letter.reason or "-"),
        ("error", letter.describe()),
        ("attempts", str(letter.attempts) if letter.attempts is not None else "-"),
        ("replays", str(letter.replays)),
        ("failed", _when(letter.failed_at)),
        ("worker", letter.worker or "-"),
        ("from queue", letter.origin_queue or "-"),
    ]
    rows += [(f"earlier error {i}", e) for i, e in enumerate(letter.previous_errors, 1)]
    for name, value in rows:
        facts.add_row(name, escape(value))
    out.print(facts)
    props = Table("property", "value", title="Properties", title_justify="left")
    for name, value in properties_dict(letter.properties).items():
        props.add_row(name, escape(str(value)))
    out.print(props)
    headers = Table("header", "value", title="Headers", title_justify="left")
    for name, value in sorted(letter.headers.items()):
        if name == "leveret-traceback":
            continue
        shown = value if isinstance(value, str) else json.dumps(to_json(value))
        headers.add_row(escape(name), escape(_short(shown, 200)))
    out.print(headers)
    out.print("[bold]Payload[/]")
    _print_body(letter)
    if letter.traceback:
        out.print("[bold]Traceback[/]")
        out.print(escape(letter.traceback.rstrip()), highlight=False)


def _print_body(letter: DeadLetter) -> None:
    """The payload as JSON, or else the start of the raw body and why it is not JSON."""
    payload, why_not = letter.read_payload()
    if why_not is None:
        out.print_json(json.dumps(payload))
        return
    body = letter.body
    as_hex = why_not == "not UTF-8"
    shown = body[: MAX_RAW_SHOWN // 3 if as_hex else MAX_RAW_SHOWN]
    part = f"all {len(body):,}" if shown == body else f"first {len(shown):,} of {len(body):,}"
    out.print(
        f"body not shown as JSON: {why_not}; {'hex' if as_hex else 'raw'}, {part} bytes",
        style="italic",
        highlight=False,
    )
    text = shown.hex(" ") if as_hex else shown.decode("utf-8", "replace")
    out.print(escape(text), highlight=False)


# -- replay and purge ---------------------------------------------------------------


class _Bars:
    """One progress bar per queue, made when its first message is handled."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[done]:,} " + verb),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def update(self, report: MoveReport) -> None:
        task = self._tasks.get(report.queue)
        if task is None:
            task = self._tasks[report.queue] = self.progress.add_task(
                report.queue, total=report.total, done=0
            )
        if self.verb.startswith("would"):
            self.progress.update(task, completed=report.scanned, done=report.matched)
        else:
            handled = report.moved + report.kept
            self.progress.update(task, completed=handled, done=report.moved)


def _letters(count: int) -> str:
    return f"{count:,} dead letter{'' if count == 1 else 's'}"


def _print_report(report: Report, verb: str, where: Filter) -> int:
    kept = report.kept
    if report.matched == 0 and not report.errors:
        # Exit 0 all the same: "nothing to do" is a normal outcome of a scheduled purge.
        queues = ", ".join(q.queue for q in report.queues) or "the dead-letter queues"
        console.print(
            f"[bold yellow]0 matched:[/] none of the {_letters(report.total)} in "
            f"{escape(queues)} matches {escape(where.describe())}; nothing "
            + (f"to {report.action}" if report.dry_run else verb),
            highlight=False,
            soft_wrap=True,
        )
        return 0
    if report.dry_run:
        console.print(
            f"would {report.action} {report.matched:,} of {_letters(report.total)} "
            f"({', '.join(f'{q.queue}: {q.matched:,}' for q in report.queues) or 'none'})"
        )
    else:
        console.print(
            f"{verb} {_letters(report.moved)}; {kept:,} others left in the dead-letter "
            f"queue{'s' if len(report.queues) > 1 else ''}"
        )
    for error in report.errors:
        console.print(
            f"[bold red]stopped:[/] {escape(error)}. Nothing was lost: messages not "
            "handled are still in the dead-letter queue; run the command again."
        )
    return 1 if report.errors else 0


def run_replay(args: argparse.Namespace) -> int:
    where = _filter(args)
    bars = _Bars("would replay" if args.dry_run else "replayed")

    async def replay(dead: DeadLetters) -> Report:
        with bars.progress:
            return await dead.replay(
                where,
                to=args.to,
                limit=args.limit,
                rate=args.rate,
                dry_run=args.dry_run,
                on_progress=bars.update,
            )

    return _print_report(_run(args, replay), "replayed", where)


def run_purge(args: argparse.Namespace) -> int:
    where = _filter(args)

    async def purge(dead: DeadLetters) -> Report:
        limit = args.limit
        if args.dry_run:
            return await dead.purge(where, limit=limit, dry_run=True)
        if not args.yes:
            counted = await dead.purge(where, limit=limit, dry_run=True)
            if counted.matched == 0:
                return counted
            queues = ", ".join(f"{q.queue} ({q.matched:,})" for q in counted.queues if q.matched)
            question = (
                f"Delete {counted.matched:,} dead letters for good from {queues} "
                f"(matching {where.describe()})?"
            )
            if not sys.stdin.isatty():
                console.print(
                    f"{escape(question)}\n[bold red]error:[/] refusing to purge without "
                    "confirmation: pass --yes"
                )
                raise SystemExit(2)
            if not Confirm.ask(escape(question), console=console, default=False):
                console.print("nothing purged")
                raise SystemExit(1)
            # Never delete more than was confirmed, even if more arrived meanwhile.
            limit = counted.matched
        bars = _Bars("purged")
        with bars.progress:
            return await dead.purge(where, limit=limit, on_progress=bars.update)

    return _print_report(_run(args, purge), "purged", where)


# -- export and import --------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    where = _filter(args)
    progress = Progress(
        TextColumn("exporting"), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )

    async def export(dead: DeadLetters) -> int:
        task = progress.add_task("export", total=None)
        with progress:
            return await dead.export_to(
                args.file, where, on_progress=lambda n: progress.update(task, completed=n)
            )

    count = _run(args, export)
    where_to = "standard output" if args.file == "-" else args.file
    console.print(f"exported {_letters(count)} to {escape(where_to)}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    queues = _queues(args)
    if len(queues) > 1:
        console.print("[bold red]error:[/] import into one --queue at most")
        return 2
    progress = Progress(
        TextColumn("importing"), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )

    async def load(dead: DeadLetters) -> Any:
        task = progress.add_task("import", total=None)
        with progress:
            return await dead.import_from(
                args.file,
                queue=queues[0] if queues else None,
                dry_run=args.dry_run,
                on_progress=lambda n: progress.update(task, completed=n),
            )

    report = _run(args, load)
    per_queue = ", ".join(f"{q}: {n:,}" for q, n in report.queues.items()) or "none"
    if report.dry_run:
        console.print(f"{_letters(report.lines)} can be imported ({per_queue})")
    else:
        console.print(f"imported {_letters(report.published)} ({per_queue})")
    return 0
