-- Events and RSVPs (the events context).
CREATE TABLE events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    host_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title text NOT NULL,
    description text,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz,
    location text,
    -- NULL = unlimited.
    capacity integer CHECK (capacity IS NULL OR capacity > 0),
    -- RSVPs with status 'going'; kept exact by the RSVP transaction, which locks the event row.
    going_count integer NOT NULL DEFAULT 0 CHECK (going_count >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR ends_at >= starts_at),
    -- The last line of defence against overbooking (the service checks first, under the lock).
    CHECK (capacity IS NULL OR going_count <= capacity)
);
-- Upcoming events, soonest first (keyset on starts_at, id).
CREATE INDEX events_starts_at_idx ON events (starts_at, id);
CREATE INDEX events_host_idx ON events (host_id);

CREATE TABLE rsvps (
    event_id uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status text NOT NULL CHECK (status IN ('going', 'interested', 'not_going')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, user_id)
);
-- Attendee lists, newest first (keyset on created_at, user_id).
CREATE INDEX rsvps_event_created_idx ON rsvps (event_id, created_at DESC, user_id DESC);
-- A user's RSVPs (export, erasure).
CREATE INDEX rsvps_user_idx ON rsvps (user_id);
