"""REST: the caller's notifications."""
from __future__ import annotations

from aiohttp import web

from api.http import Call, Router
from api.models.notifications import NotificationsQuery
from server.read_models.notifications import MarkedAllRead, Notification, NotificationList, UnreadCount

router = Router("notifications")


@router.route("GET", "/notifications", name="notifications.list", query=NotificationsQuery,
              response=NotificationList, errors=(400, 401))
async def list_notifications(request: web.Request, call: Call[None, NotificationsQuery]):
    """The caller's notifications, newest first (``?unread=true``: unread ones only)."""
    q = call.query
    return await call.services.notifications.list(call.user_id, unread_only=q.unread, limit=q.limit, cursor=q.cursor)


@router.route("GET", "/notifications/unread-count", name="notifications.unread_count", response=UnreadCount,
              errors=(401,))
async def unread_count(request: web.Request, call: Call):
    """How many notifications the caller has not read."""
    return UnreadCount(count=await call.services.notifications.unread_count(call.user_id))


@router.route("POST", "/notifications/read-all", name="notifications.read_all", response=MarkedAllRead,
              errors=(401,))
async def read_all(request: web.Request, call: Call):
    """Mark every notification of the caller read."""
    return MarkedAllRead(updated=await call.services.notifications.mark_all_read(call.user_id))


@router.route("POST", "/notifications/{id}/read", name="notifications.read", response=Notification,
              errors=(401, 404))
async def mark_read(request: web.Request, call: Call):
    """Mark one notification read (the owner's only)."""
    return await call.services.notifications.mark_read(call.user_id, request.match_info["id"])
