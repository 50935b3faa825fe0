"""Queries of the notifications endpoints (responses: ``server.read_models.notifications``)."""
from __future__ import annotations

from api.models.common import ListQuery


class NotificationsQuery(ListQuery):
    unread: bool = False
