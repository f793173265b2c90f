"""``DeadLetters``: list, summarise, show, replay, purge, export and import dead letters.

The same operations the ``leveret dlq`` command runs, for dashboards and scripts::

    from leveret.deadletter import DeadLetters, Filter

    async with DeadLetters(app) as dead:
        for group in await dead.summary():
            print(group.count, group.task, group.kind)
        report = await dead.replay(Filter.of(task="emails.*", older_than="1h"), rate=50)
        print(report.moved, "replayed")

It takes an ``App`` (its queues are the default scope) or ``Settings`` (then name the
queues in the filter). Reading operations never remove a message; replay and purge
are crash-safe (see ``leveret.deadletter.move``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from leveret import message
from leveret.amqp.browse import browse
from leveret.amqp.connection import Connector
from leveret.amqp.publish import ConfirmPublisher
from leveret.amqp.reader import count_ready
from leveret.amqp.topology import Names, QueueSpec
from leveret.amqp.types import Connection
from leveret.app import App
from leveret.deadletter import codec
from leveret.deadletter.files import atomic_output, read_lines, settle, source_name
from leveret.deadletter.filters import Filter
from leveret.deadletter.letter import DeadLetter, publishable
from leveret.deadletter.move import Mover, MoveReport, Target
from leveret.deadletter.reports import Group, ImportReport, Report
from leveret.errors import ConfigError, QueueNotFound
from leveret.priorities import default_bands
from leveret.settings import Settings

Where = Filter | Mapping[str, Any] | None

#: How many imported messages wait for their confirms at once.
IMPORT_WINDOW = 256


def _user_of(url: str) -> str:
    return unquote(urlsplit(url).username or "guest")


class DeadLetters:
    """The dead-letter queues of one namespace, as an operator works with them."""

    def __init__(self, source: App | Settings | None = None, *, prefetch: int = 500) -> None:
        if isinstance(source, App):
            self.settings = source.settings
            self._connector = source.connector
            self._own_connector = False
            self._specs: dict[str, QueueSpec] = dict(source.queues)
        else:
            self.settings = source if source is not None else Settings()
            self._connector = Connector(self.settings, name="leveret-dlq")
            self._own_connector = True
            self._specs = {}
        self.names = Names(self.settings.namespace)
        self.prefetch = prefetch
        self._publisher = ConfirmPublisher(self._connector, self.settings)
        self._user = _user_of(self.settings.url)

    async def close(self) -> None:
        await self._publisher.close()
        if self._own_connector:
            await self._connector.close()

    async def __aenter__(self) -> DeadLetters:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- which queues ---------------------------------------------------------------

    def queue_names(self, where: Where = None) -> list[str]:
        """The logical queues an operation covers: the filter's, else the app's."""
        chosen = Filter.coerce(where).queues
        if chosen:
            return list(dict.fromkeys(chosen))
        if not self._specs:
            raise ConfigError(
                "which dead-letter queues? Name them (--queue emails, or "
                "Filter.of(queue='emails')), or pass the app (--app module:app) whose "
                "queues to use."
            )
        return sorted(self._specs)

    async def _connection(self) -> Connection:
        return await self._connector.get()

    async def _queue_size(self, amqp_name: str) -> int | None:
        """Ready messages in a queue, or None when it does not exist."""
        return await count_ready(await self._connection(), amqp_name)

    async def sizes(self, where: Where = None) -> dict[str, int]:
        """Messages waiting in each dead-letter queue (queues that do not exist yet are
        left out unless named explicitly, which is an error)."""
        explicit = bool(Filter.coerce(where).queues)
        sizes: dict[str, int] = {}
        for queue in self.queue_names(where):
            size = await self._queue_size(self.names.dead_queue(queue))
            if size is None:
                if explicit:
                    raise QueueNotFound(
                        f"dead-letter queue {self.names.dead_queue(queue)!r} does not exist "
                        f"(queue {queue!r}, namespace {self.settings.namespace!r}): check the "
                        "queue name and LEVERET_NAMESPACE; a worker or `leveret declare` "
                        "creates it."
                    )
                continue
            sizes[queue] = size
        return sizes

    # -- reading --------------------------------------------------------------------

    async def scan(self, where: Where = None) -> AsyncGenerator[DeadLetter, None]:
        """Every matching dead letter, queue by queue, oldest first; nothing is removed.

        Messages seen stay unacknowledged until the scan ends (or is closed early:
        use ``contextlib.aclosing``), then all return to their queue.
        """
        flt = Filter.coerce(where)
        for queue in await self.sizes(flt):
            amqp_name = self.names.dead_queue(queue)
            async with contextlib.aclosing(
                browse(await self._connection(), amqp_name)
            ) as deliveries:
                async for delivered in deliveries:
                    letter = DeadLetter.parse(queue, delivered.body, delivered.header.properties)
                    if flt.matches(letter):
                        yield letter

    async def letters(self, where: Where = None, *, limit: int | None = 100) -> list[DeadLetter]:
        """The first ``limit`` matching dead letters (None: all of them)."""
        found: list[DeadLetter] = []
        if limit is not None and limit <= 0:
            return found
        async with contextlib.aclosing(self.scan(where)) as letters:
            async for letter in letters:
                found.append(letter)
                if limit is not None and len(found) >= limit:
                    break
        return found

    async def summary(self, where: Where = None) -> list[Group]:
        """What broke, how often: counts by (task, exception type), most frequent first."""
        groups: dict[tuple[str | None, str], Group] = {}
        async with contextlib.aclosing(self.scan(where)) as letters:
            async for letter in letters:
                key = (letter.task, letter.kind)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = Group(letter.task, letter.kind)
                group.add(letter)
        return sorted(groups.values(), key=lambda g: (-g.count, g.task or "", g.kind))

    async def find(self, letter_id: str, where: Where = None) -> list[DeadLetter]:
        """Dead letters whose id is ``letter_id`` or starts with it."""
        if not letter_id:
            raise ConfigError("give the id (or the start of it) of a dead letter")
        flt = Filter.coerce(where)
        scoped = Filter(queues=flt.queues, ids=(letter_id,))
        return await self.letters(scoped, limit=None)

    # -- moving ---------------------------------------------------------------------

    async def replay(
        self,
        where: Where = None,
        *,
        to: str | None = None,
        limit: int | None = None,
        rate: float | None = None,
        dry_run: bool = False,
        on_progress: Callable[[MoveReport], None] | None = None,
    ) -> Report:
        """Send matching dead letters back to their work queue (or ``to``).

        Each copy keeps its task id, starts again at attempt 1 and counts one more
        replay (``leveret-replays``); the error it died of joins
        ``leveret-previous-errors``. At most ``limit`` are replayed, at most ``rate`` a
        second. Non-matching ones stay in the dead-letter queue.
        """
        flt = Filter.coerce(where)
        _check_limits(limit, rate)
        sizes = await self.sizes(flt)
        for queue in sizes if to is None else [to]:
            await self._require_work_queue(queue)
        if dry_run:
            return await self._dry_run("replay", flt, sizes, limit, on_progress)
        now = message.now_ms()
        exchange = self.names.tasks_exchange

        def target_for(queue: str) -> Callable[[DeadLetter], Target]:
            spec = self._spec(to or queue)

            def target(letter: DeadLetter) -> Target:
                band = spec.band(int(letter.properties.priority or 0))
                return exchange, band, letter.replay_properties(now)

            return target

        return await self._move("replay", flt, sizes, target_for, limit, rate, on_progress)

    async def purge(
        self,
        where: Where = None,
        *,
        limit: int | None = None,
        dry_run: bool = False,
        on_progress: Callable[[MoveReport], None] | None = None,
    ) -> Report:
        """Delete matching dead letters for good; the others stay."""
        flt = Filter.coerce(where)
        _check_limits(limit, None)
        sizes = await self.sizes(flt)
        if dry_run:
            return await self._dry_run("purge", flt, sizes, limit, on_progress)
        return await self._move("purge", flt, sizes, lambda _q: _drop, limit, None, on_progress)

    async def _move(
        self,
        action: str,
        flt: Filter,
        sizes: dict[str, int],
        target_for: Callable[[str], Callable[[DeadLetter], Target]],
        limit: int | None,
        rate: float | None,
        on_progress: Callable[[MoveReport], None] | None,
    ) -> Report:
        report = Report(action)
        prefetch = self.prefetch
        if rate:
            # A selected message may wait for its turn while prefetched: keep that wait
            # far below the broker's consumer_timeout.
            prefetch = max(1, min(prefetch, int(rate * 30)))
        for queue in sizes:
            left = None if limit is None else limit - report.moved
            if left is not None and left <= 0:
                break
            mover = Mover(
                connection=await self._connection(),
                publisher=self._publisher,
                queue=queue,
                dead_queue=self.names.dead_queue(queue),
                where=flt,
                target=target_for(queue),
                user=self._user,
                limit=left,
                rate=rate,
                prefetch=prefetch,
                on_progress=on_progress,
            )
            report.queues.append(mover.report)
            await mover.run()
            if mover.report.error:
                break
        return report

    async def _dry_run(
        self,
        action: str,
        flt: Filter,
        sizes: dict[str, int],
        limit: int | None,
        on_progress: Callable[[MoveReport], None] | None,
    ) -> Report:
        report = Report(action, dry_run=True)
        for queue, size in sizes.items():
            part = MoveReport(queue, total=size)
            report.queues.append(part)
            async with contextlib.aclosing(
                browse(await self._connection(), self.names.dead_queue(queue))
            ) as deliveries:
                async for delivered in deliveries:
                    part.scanned += 1
                    letter = DeadLetter.parse(queue, delivered.body, delivered.header.properties)
                    if flt.matches(letter) and (limit is None or report.matched < limit):
                        part.matched += 1
                    else:
                        part.kept += 1
                    if on_progress is not None:
                        on_progress(part)
        return report

    def _spec(self, queue: str) -> QueueSpec:
        """How ``queue`` is set up: as the app says, else as ``App.queue`` would make it
        from the settings (its priority bands decide where a replayed letter goes)."""
        known = self._specs.get(queue)
        if known is not None:
            return known
        queue_type = self.settings.queue_type
        return QueueSpec(
            name=queue, type=queue_type, priority_bands=default_bands(self.settings, queue_type)
        )

    async def _require_work_queue(self, queue: str) -> None:
        if await self._queue_size(self.names.work_queue(queue)) is None:
            raise QueueNotFound(
                f"work queue {self.names.work_queue(queue)!r} does not exist, so nothing "
                f"could be replayed to {queue!r}: start a worker for it or run "
                "`leveret declare`, or replay elsewhere with --to QUEUE."
            )

    # -- export and import ----------------------------------------------------------

    async def export_to(
        self,
        target: str | Path | TextIO,
        where: Where = None,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write matching dead letters as JSON lines (see ``leveret.deadletter.codec``);
        they stay in their queues. ``"-"`` is standard output. Returns the count."""
        flt = Filter.coerce(where)
        await self.sizes(flt)  # a missing queue is an error before any file is touched
        count = 0
        with atomic_output(target) as out:
            async with contextlib.aclosing(self.scan(flt)) as letters:
                async for letter in letters:
                    out.write(codec.dumps(letter.queue, letter.body, letter.properties))
                    out.write("\n")
                    count += 1
                    if on_progress is not None:
                        on_progress(count)
        return count

    async def import_from(
        self,
        source: str | Path | TextIO,
        *,
        queue: str | None = None,
        dry_run: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Publish the dead letters of an export into the dead-letter queues.

        Each goes to the dead-letter queue of its recorded queue (or ``queue``). The
        whole file is read and checked before anything is published, so a bad line
        stops the import with nothing sent.
        """
        lines = read_lines(source)
        report = ImportReport(dry_run=dry_run)
        for number, line in enumerate(lines(), 1):
            if not line.strip():
                continue
            try:
                record = codec.loads(line)
            except codec.CodecError as exc:
                raise ConfigError(f"{source_name(source)} line {number}: {exc}") from None
            destination = queue or record.queue
            report.queues[destination] = report.queues.get(destination, 0) + 1
            report.lines += 1
        await self.sizes(Filter(queues=tuple(report.queues)))
        if dry_run:
            return report
        pending: list[Any] = []
        for line in lines():
            if not line.strip():
                continue
            record = codec.loads(line)
            props = publishable(record.properties, record.headers, self._user)
            dead_queue = self.names.dead_queue(queue or record.queue)
            pending.append(self._publisher.publish("", dead_queue, record.body, props))
            if len(pending) >= IMPORT_WINDOW:
                report.published += await settle(pending, on_progress, report.published)
        report.published += await settle(pending, on_progress, report.published)
        return report


def _drop(_letter: DeadLetter) -> Target:
    return None


def _check_limits(limit: int | None, rate: float | None) -> None:
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be 0 or more, not {limit}")
    if rate is not None and rate <= 0:
        raise ConfigError(f"rate must be above 0 messages a second, not {rate}")
