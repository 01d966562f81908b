"""Clients of the stores (Redis, S3) and, later, the upload confirmation consumer."""
