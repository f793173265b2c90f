"""``leveret doctor``: a live broker checked against what an app needs.

``await diagnose(app)`` returns one ``Finding`` per problem, each with its fix; an
empty list means the broker is ready for this app. It changes nothing on the broker.
"""

from __future__ import annotations

from leveret.doctor.checks import Finding, diagnose

__all__ = ["Finding", "diagnose"]
