"""Every MongoDB index: (collection, keys, create_index options). Ensured at start."""
from __future__ import annotations

from typing import Any

INDEXES: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = []
