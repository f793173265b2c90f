"""This repository's own task catalogue: contracts, handlers and the demo workload."""
