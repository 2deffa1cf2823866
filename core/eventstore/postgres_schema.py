"""DDL of the Postgres event store. Idempotent: run at every start under an advisory lock."""

from __future__ import annotations

from core.naming import quote_ident

__all__ = ("schema_ddl",)


def schema_ddl(schema: str) -> str:
    """The statements that create (or leave as they are) the event store's objects."""
    s = quote_ident(schema)
    channel = f"{schema}_events"
    return f"""
CREATE SCHEMA IF NOT EXISTS {s};

CREATE TABLE IF NOT EXISTS {s}.events (
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{{}}',
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_stream_version_pk PRIMARY KEY (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

CREATE INDEX IF NOT EXISTS events_position_idx
    ON {s}.events (transaction_id, global_position);

-- Only a statement that appended something notifies (and so takes a transaction id here):
-- a losing or idempotent append inserts nothing, and a NOTIFY would wake every reader for
-- nothing, and give the writer's transaction an id that holds the fence.
CREATE OR REPLACE FUNCTION {s}.notify_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM appended) THEN
        PERFORM pg_notify('{channel}', pg_current_xact_id()::text);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS events_notify ON {s}.events;
CREATE TRIGGER events_notify AFTER INSERT ON {s}.events
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.notify_events();

CREATE TABLE IF NOT EXISTS {s}.dead_letters (
    lane           text        NOT NULL,
    event_id       uuid        NOT NULL,
    transaction_id bigint      NOT NULL,
    global_position bigint     NOT NULL,
    stream_id      text        NOT NULL,
    stream_version bigint      NOT NULL,
    event_type     text        NOT NULL,
    error          text        NOT NULL,
    blocked_by     uuid,
    payload        jsonb       NOT NULL,
    status         text        NOT NULL DEFAULT 'parked'
        CHECK (status IN ('parked', 'retry', 'skipped', 'resolved')),
    parked_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dead_letters_pk PRIMARY KEY (lane, event_id)
);

CREATE TABLE IF NOT EXISTS {s}.lane_status (
    lane        text PRIMARY KEY,
    state       text        NOT NULL,
    owner       text        NOT NULL,
    events      bigint      NOT NULL DEFAULT 0,
    rate        double precision NOT NULL DEFAULT 0,
    retries     bigint      NOT NULL DEFAULT 0,
    last_error  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
"""
