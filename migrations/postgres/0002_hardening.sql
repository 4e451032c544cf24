-- As ../0002_hardening.sql.
UPDATE users SET imported_hash = NULL
WHERE imported_hash IS NOT NULL AND imported_hash != password_hash;

CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_action ON audit_log (action, id);
CREATE INDEX audit_log_by_at ON audit_log (at);
