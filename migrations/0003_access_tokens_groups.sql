-- Access tokens (for CI jobs and robot accounts), robot accounts, and
-- groups as grant subjects (`@team`).

-- Robots cannot log in with a password (their hash is unusable), only with
-- their access tokens.
ALTER TABLE users ADD COLUMN is_robot INTEGER NOT NULL DEFAULT 0 CHECK (is_robot IN (0, 1));

CREATE TABLE groups (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Without the '@' that grant subjects put in front of it.
    name       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);

CREATE INDEX group_members_by_user ON group_members (user_id);

CREATE TABLE access_tokens (
    -- Public identifier: part of the token, shown in listings, used to revoke.
    id             TEXT    PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           TEXT    NOT NULL,
    -- SHA-256 of the token's secret part; the token itself is never stored.
    secret_hash    BLOB    NOT NULL,
    -- JSON: [{"type","pattern","actions"}], no wider than the owner's grants.
    scopes         TEXT    NOT NULL,
    -- Whether the token may open the admin API (only an admin can make one).
    admin          INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    created_by     TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    -- NULL: never.
    expires_at     INTEGER,
    last_used_at   INTEGER,
    last_used_from TEXT,
    UNIQUE (user_id, name)
);

-- Refresh tokens handed out to a login made with an access token are
-- bounded by it, and end with it.
ALTER TABLE refresh_tokens ADD COLUMN access_token_id TEXT
    REFERENCES access_tokens (id) ON DELETE CASCADE;
