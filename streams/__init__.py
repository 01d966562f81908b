"""Redis Streams engine of the event pipeline.

Names (:mod:`streams.names`), the event envelope (:mod:`streams.envelope`),
publishing (:mod:`streams.publisher`), the consumer runtime with leases,
reclaim, retries, deferral and dead letters (:mod:`streams.consumer`),
retention, metrics and the ``backlog`` report. Consumer groups are declared
as :class:`streams.spec.GroupSpec` and listed in :mod:`streams.registry`.
"""
