"""Embedded PostgreSQL, MongoDB (SecantusDB) and Redis for running Pulse with no store configured."""
from storage.embedded.launcher import EmbeddedStores, EmbeddedStoresError, start_embedded_stores

__all__ = ["EmbeddedStores", "EmbeddedStoresError", "start_embedded_stores"]
