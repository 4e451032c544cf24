-- As ../0004_login_failures.sql.
CREATE TABLE login_failures (
    account         TEXT   COLLATE "C" NOT NULL,
    client          TEXT   COLLATE "C" NOT NULL,
    failures        BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL,
    PRIMARY KEY (account, client)
);

CREATE INDEX login_failures_by_time ON login_failures (last_failure_at);
