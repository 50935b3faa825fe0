-- The purge of an account as a saga: one row per purge, one row per step. ``user_id``
-- is kept only while the saga runs (no foreign key: the users row is deleted by the
-- last step); when it finishes it is set to NULL and only ``subject`` (the keyed hash
-- used by the audit log) remains.
CREATE TABLE erasure_sagas (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid,
    subject text NOT NULL,
    -- running: steps left to do; stuck: a step failed purge_max_attempts times (reported,
    -- still retried on every run); completed: the user is gone.
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'stuck', 'completed')),
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK ((status = 'completed') = (user_id IS NULL))
);
CREATE UNIQUE INDEX erasure_sagas_user_key ON erasure_sagas (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX erasure_sagas_open_idx ON erasure_sagas (started_at) WHERE status <> 'completed';

CREATE TABLE erasure_steps (
    saga_id uuid NOT NULL REFERENCES erasure_sagas (id) ON DELETE CASCADE,
    position integer NOT NULL,
    step text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'failed', 'done')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, step)
);
