-- An agency's auditor lists its agency's requests (ListAccesses by agency).
-- The filter was `caller LIKE 'agency/<a>/system/%'`, which the caller index
-- (non-C collation) does not serve: every page scanned and sorted the whole
-- trail. The agency is now a column PostgreSQL derives from the caller (it
-- cannot disagree with the caller, which the entry's hash covers), indexed
-- with the time as the subject is. Nothing looked callers up by the whole
-- name, so that index goes. Adding a stored column rewrites the table once.
ALTER TABLE audit_log ADD COLUMN agency TEXT NOT NULL GENERATED ALWAYS AS (
    CASE WHEN starts_with(caller, 'agency/') THEN split_part(caller, '/', 2) ELSE '' END
) STORED;
DROP INDEX audit_by_caller;
CREATE INDEX audit_by_agency ON audit_log (agency, at_us);
