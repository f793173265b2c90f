"""Dead letters: inspect, replay, purge, export and import them.

``DeadLetters`` is the API (``leveret.deadletter.operations``); ``leveret dlq`` is its
command line (``leveret.cli.dlq``). Modules: ``letter`` reads one message, ``filters``
selects, ``codec`` writes JSON lines and exact AMQP headers, ``move`` replays or purges
crash-safely, ``reports`` and ``files`` hold what the operations return and how export
files are written. Reading a queue without removing anything is AMQP work, done in
``leveret.amqp.browse``; nothing here imports the AMQP client libraries.
"""

from leveret.deadletter.codec import CodecError
from leveret.deadletter.filters import CRITERIA, Filter, parse_age
from leveret.deadletter.letter import DeadLetter
from leveret.deadletter.move import MoveReport
from leveret.deadletter.operations import DeadLetters
from leveret.deadletter.reports import Group, ImportReport, Report

__all__ = [
    "CRITERIA",
    "CodecError",
    "DeadLetter",
    "DeadLetters",
    "Filter",
    "Group",
    "ImportReport",
    "MoveReport",
    "Report",
    "parse_age",
]
