"""Clients of the stores (Redis, S3); the conversation store, sole owner of its key families;
rate limits, presence and the cluster-wide permit semaphore."""
