-- Hybrid feed fan-out (the social context's home feed): the authors whose posts are not
-- (only) pushed into their followers' feeds. No row: fanned out on write. 'pull': not
-- pushed; followers' feed reads merge the author's recent posts (kept per author in
-- Redis). 'to_pull' / 'to_push': a threshold crossing in progress, during which posts
-- are both pushed and kept per author, so every feed stays complete whatever step the
-- crossing has reached (a crossing that stopped half-way is resumed from its state).
CREATE TABLE feed_fanout_modes (
    author_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    mode text NOT NULL CHECK (mode IN ('to_pull', 'pull', 'to_push')),
    changed_at timestamptz NOT NULL DEFAULT now()
);
