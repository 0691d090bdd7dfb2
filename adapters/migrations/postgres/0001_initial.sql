-- Clarion's PostgreSQL schema: the SQLite schema's tables and columns, with timestamptz
-- times (written to the millisecond, as on SQLite), jsonb for JSON, BIGSERIAL ids and TEXT
-- enums spelled as in the domain.

CREATE TABLE devices (
    id                  BIGSERIAL   PRIMARY KEY,
    app                 TEXT        NOT NULL,
    platform            TEXT        NOT NULL,
    -- The APNs or FCM token, or the Web Push endpoint.
    token_key           TEXT        NOT NULL,
    p256dh              TEXT,
    auth                TEXT,
    name                TEXT,
    active              BOOLEAN     NOT NULL DEFAULT TRUE,
    user_id             TEXT,
    device_id           TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    deactivated_at      TIMESTAMPTZ,
    deactivation_reason TEXT,
    UNIQUE (app, platform, token_key)
);
CREATE INDEX devices_app_user ON devices (app, user_id);
CREATE INDEX devices_app_active ON devices (app, active);

CREATE TABLE messages (
    id                      BIGSERIAL   PRIMARY KEY,
    app                     TEXT        NOT NULL,
    -- user | devices | broadcast
    target_kind             TEXT        NOT NULL,
    -- The user id of a message to a user, else NULL.
    recipient               TEXT,
    -- devices: an array of device ids; broadcast: {"platform": "apns" | null}; user: NULL.
    target_json             JSONB,
    heading                 TEXT,
    body                    TEXT        NOT NULL,
    url                     TEXT,
    extra_data              JSONB,
    template_slug           TEXT,
    tag                     TEXT,
    priority                TEXT        NOT NULL,
    options                 JSONB       NOT NULL,
    retry_sending           BOOLEAN     NOT NULL,
    sender                  TEXT        NOT NULL,
    state                   TEXT        NOT NULL,
    error                   TEXT,
    number_of_send_attempts BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at         TIMESTAMPTZ,
    sent_at                 TIMESTAMPTZ,
    queued_at               TIMESTAMPTZ NOT NULL,
    extra_sender_data       JSONB,
    created_at              TIMESTAMPTZ NOT NULL,
    changed_at              TIMESTAMPTZ NOT NULL,
    lease_owner             TEXT,
    lease_until             TIMESTAMPTZ
);
CREATE INDEX messages_state_next_attempt ON messages (state, next_attempt_at);
CREATE INDEX messages_app_tag ON messages (app, tag);
CREATE INDEX messages_app_recipient ON messages (app, recipient);
CREATE INDEX messages_app_created ON messages (app, created_at);
CREATE INDEX messages_app_template ON messages (app, template_slug);
-- The claim scans the due messages in id order; this partial index holds only them, so it
-- stays small however long the message log grows.
CREATE INDEX messages_due ON messages (id)
    WHERE state IN ('WAITING', 'ERROR_RETRY');

CREATE TABLE message_related_objects (
    -- Keeps the order in which the caller gave the related objects.
    id         BIGSERIAL PRIMARY KEY,
    message_id BIGINT    NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    kind       TEXT      NOT NULL,
    object_id  TEXT      NOT NULL
);
CREATE INDEX message_related_objects_object ON message_related_objects (kind, object_id);
CREATE INDEX message_related_objects_message ON message_related_objects (message_id);

CREATE TABLE deliveries (
    id          BIGSERIAL   PRIMARY KEY,
    message_id  BIGINT      NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    device_id   BIGINT      REFERENCES devices (id) ON DELETE SET NULL,
    channel     TEXT        NOT NULL,
    state       TEXT        NOT NULL,
    attempts    BIGINT      NOT NULL DEFAULT 0,
    provider_id TEXT,
    error_code  TEXT,
    error_text  TEXT,
    details     JSONB,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX deliveries_message ON deliveries (message_id);
-- Also serves deactivate_dead_devices' "latest delivery of this device" look-up.
CREATE INDEX deliveries_device ON deliveries (device_id, id);

CREATE TABLE templates (
    app              TEXT        NOT NULL,
    slug             TEXT        NOT NULL,
    body             TEXT        NOT NULL,
    heading          TEXT,
    url              TEXT,
    is_active        BOOLEAN     NOT NULL,
    allow_duplicates BOOLEAN     NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (app, slug)
);

-- API keys, kept as the SHA-256 of their secrets. scope is 'admin' or 'app:<id>'.
CREATE TABLE api_keys (
    id         BIGSERIAL   PRIMARY KEY,
    name       TEXT        NOT NULL,
    scope      TEXT        NOT NULL,
    prefix     TEXT        NOT NULL,
    hash       TEXT        NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
