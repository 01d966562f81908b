"""Private Redis and S3 servers for the embedded local stack and the tests."""
