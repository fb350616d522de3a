"""The tooling around the service, kept apart from the code a worker runs: the embedded
broker and PostgreSQL, worker processes, the driver that plays upstream and downstream,
the workloads, the invariant checker and the chaos campaign (used by the demo, the bench,
`payments chaos` and the tests; no worker imports it)."""
