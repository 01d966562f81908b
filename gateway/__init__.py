"""The HTTP side: app factory, middlewares, routes, CLI and process runner."""
