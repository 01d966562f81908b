"""The application's event catalogue: every stream, consumer group and event type, named once.

:mod:`events.catalogue` declares them; :func:`events.catalogue.publish` is how any
package publishes one. The streams core (:mod:`streams`) knows none of them.
"""
