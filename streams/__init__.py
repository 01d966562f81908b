"""Redis Streams engine: a reusable core that knows no event of the application.

Names (:mod:`streams.names`), the event envelope (:mod:`streams.envelope`),
publishing (:mod:`streams.publisher`), the consumer runtime
(:mod:`streams.runtime`) made of delivery with leases, retries, deferral and
dead letters (:mod:`streams.delivery`) and cluster housekeeping with reclaim,
delayed moves, retention and reaping (:mod:`streams.housekeeping`), metrics
and the ``backlog`` report. Its settings are a :class:`streams.config.StreamsConfig`;
consumer groups are declared as :class:`streams.spec.GroupSpec` by the
application, which also names its streams.
"""
