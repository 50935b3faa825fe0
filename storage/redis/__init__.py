"""Redis adapters, named for what they hold and what a Redis outage means for it:

- ``<what>Cache``: PostgreSQL or MongoDB holds the truth; Redis keeps a copy rebuilt on a
  miss, so an outage costs speed, not data (FeedCache, PopularPostsCache, ProfileCache,
  SessionsCache).
- ``<what>Store``: the data lives in Redis only (OffsetLogStore, PresenceStore,
  RateLimitStore, SocketSlotStore, WriteMarkStore, PushWindowStore).

``RedisErasure`` holds nothing of its own: it is the Redis side of an erasure, across the
keys of the others. Every adapter raises ``RedisUnavailable`` when Redis does not answer
(``redis_boundary`` in client.py).
"""
