"""MongoDB's side of storage's error boundary (storage/errors.py). Not in client.py: the
repositories need it, and client.py imports them (through indexes.py)."""
from __future__ import annotations

from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError

from kernel.errors import StoreUnavailable
from storage.errors import translates_unavailable

# What PyMongo raises when MongoDB does not answer (no server to select, the network
# down or too slow): the store is unavailable, not the command wrong.
MONGO_UNAVAILABLE = (ConnectionFailure, ServerSelectionTimeoutError, NetworkTimeout, AutoReconnect)

# The class decorator of every Mongo repository: those errors leave it as StoreUnavailable.
mongo_boundary = translates_unavailable(MONGO_UNAVAILABLE, lambda: StoreUnavailable("mongo"))
