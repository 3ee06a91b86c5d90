"""genloop's version, on its own so that any layer (the HTTP API's /health and OpenAPI document)
can read it without importing the top-level package, which reaches every verb."""

__version__ = "0.1.0"
