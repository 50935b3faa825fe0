-- Accounts, profiles and sessions.
CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    username text NOT NULL,
    password_hash text NOT NULL,
    -- 'active' or 'pending_erasure' (hidden, cannot log in, restorable until purge_after).
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'pending_erasure')),
    erasure_requested_at timestamptz,
    purge_after timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Unique case-insensitively; these also serve the lookups by email / username.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));
CREATE INDEX users_purge_due_idx ON users (purge_after) WHERE status = 'pending_erasure';

CREATE TABLE profiles (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    display_name text NOT NULL,
    bio text NOT NULL DEFAULT '',
    avatar_url text,
    -- Counters kept exact by the services that change them, in the same transaction.
    followers_count integer NOT NULL DEFAULT 0 CHECK (followers_count >= 0),
    following_count integer NOT NULL DEFAULT 0 CHECK (following_count >= 0),
    posts_count integer NOT NULL DEFAULT 0 CHECK (posts_count >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    -- sha256 of the opaque token: a leaked table does not leak usable tokens.
    token_hash bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    user_agent text,
    client_address text
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);
