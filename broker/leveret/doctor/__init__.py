"""``leveret doctor``: a live broker checked against what an app needs.

``await diagnose(app)`` returns one ``Finding`` per problem, each with its fix; an
empty list means the broker is ready for this app. ``await examine(app)`` also says
which checks were skipped because the management HTTP API did not answer. Nothing on
the broker is changed.
"""

from __future__ import annotations

from leveret.doctor.checks import Diagnosis, diagnose, examine
from leveret.doctor.finding import Finding

__all__ = ["Diagnosis", "Finding", "diagnose", "examine"]
