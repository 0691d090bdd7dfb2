-- Clarion's SQLite schema. Every timestamp is INTEGER unix milliseconds (UTC), so that the
-- claim query compares numbers; enums are stored as their lower- or upper-case names.

CREATE TABLE devices (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    app                 TEXT    NOT NULL,
    platform            TEXT    NOT NULL,
    -- The APNs or FCM token, or the Web Push endpoint.
    token_key           TEXT    NOT NULL,
    p256dh              TEXT,
    auth                TEXT,
    name                TEXT,
    active              INTEGER NOT NULL DEFAULT 1,
    user_id             TEXT,
    device_id           TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    deactivated_at      INTEGER,
    deactivation_reason TEXT,
    UNIQUE (app, platform, token_key)
);
CREATE INDEX devices_app_user ON devices (app, user_id);
CREATE INDEX devices_app_active ON devices (app, active);

CREATE TABLE messages (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    app                     TEXT    NOT NULL,
    -- user | devices | broadcast
    target_kind             TEXT    NOT NULL,
    -- The user id of a message to a user, else NULL.
    recipient               TEXT,
    -- devices: a JSON array of device ids; broadcast: {"platform": "apns" | null}; user: NULL.
    target_json             TEXT,
    heading                 TEXT,
    body                    TEXT    NOT NULL,
    url                     TEXT,
    extra_data              TEXT,
    template_slug           TEXT,
    tag                     TEXT,
    priority                TEXT    NOT NULL,
    options                 TEXT    NOT NULL,
    retry_sending           INTEGER NOT NULL,
    sender                  TEXT    NOT NULL,
    state                   TEXT    NOT NULL,
    error                   TEXT,
    number_of_send_attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at         INTEGER,
    sent_at                 INTEGER,
    queued_at               INTEGER NOT NULL,
    extra_sender_data       TEXT,
    created_at              INTEGER NOT NULL,
    changed_at              INTEGER NOT NULL,
    lease_owner             TEXT,
    lease_until             INTEGER
);
CREATE INDEX messages_state_next_attempt ON messages (state, next_attempt_at);
CREATE INDEX messages_app_tag ON messages (app, tag);
CREATE INDEX messages_app_recipient ON messages (app, recipient);
CREATE INDEX messages_app_created ON messages (app, created_at);
CREATE INDEX messages_app_template ON messages (app, template_slug);

CREATE TABLE message_related_objects (
    -- Keeps the order in which the caller gave the related objects.
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL,
    object_id  TEXT    NOT NULL
);
CREATE INDEX message_related_objects_object ON message_related_objects (kind, object_id);
CREATE INDEX message_related_objects_message ON message_related_objects (message_id);

CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    device_id   INTEGER REFERENCES devices (id) ON DELETE SET NULL,
    channel     TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    provider_id TEXT,
    error_code  TEXT,
    error_text  TEXT,
    details     TEXT,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX deliveries_message ON deliveries (message_id);
CREATE INDEX deliveries_device ON deliveries (device_id);

CREATE TABLE templates (
    app              TEXT    NOT NULL,
    slug             TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    heading          TEXT,
    url              TEXT,
    is_active        INTEGER NOT NULL,
    allow_duplicates INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (app, slug)
);
