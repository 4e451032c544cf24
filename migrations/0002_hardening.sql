-- Security review (issue 10).
--
-- A legacy htpasswd hash must not outlive its upgrade to argon2id: older
-- versions kept it in imported_hash. Only rows still holding that very hash
-- as their password keep it.
UPDATE users SET imported_hash = NULL
WHERE imported_hash IS NOT NULL AND imported_hash != password_hash;

-- Audit queries by user (target or api:<user> actor), action and time;
-- newest first by id.
CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_action ON audit_log (action, id);
CREATE INDEX audit_log_by_at ON audit_log (at);
