"""Domain services, one module per bounded context, assembled in ``server.app``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.services.events import EventsService
    from server.services.feed import FeedService
    from server.services.messaging import MessagingService
    from server.services.notifications import NotificationsService
    from server.services.posts import PostsService
    from server.services.presence import PresenceService
    from server.services.privacy import PrivacyService
    from server.services.rate_limits import RateLimits
    from server.services.social import SocialService
    from server.services.users import UsersService


@dataclass
class Services:
    users: "UsersService"
    rate_limits: "RateLimits"
    posts: "PostsService"
    social: "SocialService"
    feed: "FeedService"
    events: "EventsService"
    notifications: "NotificationsService"
    messaging: "MessagingService"
    privacy: "PrivacyService"
    presence: "PresenceService"
