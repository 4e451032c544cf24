-- Login throttling counters, shared by every authd process on this
-- database: failed password (or access token) checks per account and
-- client address. Only failures write here; a good login deletes the row
-- of a pair that had failures. Rows are deleted once idle (see
-- authd/src/throttle.rs).
CREATE TABLE login_failures (
    -- The account name as given (at most 128 bytes), not a user id: guesses
    -- at names that do not exist are counted too.
    account         TEXT    NOT NULL,
    -- The client address, canonical text form.
    client          TEXT    NOT NULL,
    failures        INTEGER NOT NULL,
    -- Unix milliseconds of the last failure: the block (if any) runs from it.
    last_failure_at INTEGER NOT NULL,
    PRIMARY KEY (account, client)
) WITHOUT ROWID;

CREATE INDEX login_failures_by_time ON login_failures (last_failure_at);
