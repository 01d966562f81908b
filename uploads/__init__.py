"""Upload confirmation in the background: the ``upload-confirmation`` consumer group.

:mod:`uploads.confirmation` verifies chunks the gateway could not see on S3 yet,
with deferrals, and hands them on to transcription; :mod:`uploads.metrics` counts
its outcomes.
"""
