-- authd's schema: users, grants, refresh tokens, audit log.
-- Times are Unix seconds (INTEGER). Append-only: never edit a migration
-- that has been released; add a new one.

CREATE TABLE users (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT    NOT NULL UNIQUE,
    -- PHC string (argon2id) or a legacy htpasswd hash until the first login.
    password_hash       TEXT    NOT NULL,
    -- The hash as last imported from an htpasswd file, so a re-import of an
    -- unchanged line is recognised after the hash was upgraded.
    imported_hash       TEXT,
    is_admin            INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    disabled            INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    password_changed_at INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

CREATE TABLE grants (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- A user name, 'anonymous' or '*'.
    subject       TEXT    NOT NULL,
    -- 'repository' (pattern is a glob) or 'registry' (pattern 'catalog').
    resource_type TEXT    NOT NULL,
    pattern       TEXT    NOT NULL,
    -- Comma-separated: pull, push, delete, or '*'.
    actions       TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (subject, resource_type, pattern)
);

CREATE INDEX grants_by_subject ON grants (subject);

CREATE TABLE refresh_tokens (
    -- Public identifier shown in listings and used to revoke.
    id           TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 of the token; the token itself is never stored.
    token_hash   BLOB    NOT NULL UNIQUE,
    client_id    TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
);

CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);

CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    -- Who: 'cli', 'api:<user>', 'system'.
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    detail TEXT    NOT NULL DEFAULT ''
);
