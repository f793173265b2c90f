"""Dead letters: inspect, replay, purge, export and import them.

``DeadLetters`` is the API (``broker.deadletter.operations``); ``leveret dlq`` is its
command line (``broker.cli.dlq``). Modules: ``letter`` reads one message, ``filters``
selects, ``codec`` writes JSON lines and exact AMQP headers, ``browse`` reads a queue
without removing anything, ``move`` replays or purges crash-safely, ``reports`` and
``files`` hold what the operations return and how export files are written.
"""

from broker.deadletter.codec import CodecError
from broker.deadletter.filters import CRITERIA, Filter, parse_age
from broker.deadletter.letter import DeadLetter
from broker.deadletter.move import MoveReport
from broker.deadletter.operations import DeadLetters
from broker.deadletter.reports import Group, ImportReport, Report

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
