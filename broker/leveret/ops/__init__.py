"""Operations at the edge: health endpoints, metrics, Sentry, logs, worker processes, and
finding a broker for the demo and the tests. Nothing below imports from here."""
