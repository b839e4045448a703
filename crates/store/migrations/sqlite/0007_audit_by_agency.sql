-- An agency's auditor lists its agency's requests (ListAccesses by agency).
-- The filter was `caller LIKE 'agency/<a>/system/%'`, which no index serves
-- (SQLite's LIKE is case-insensitive, the caller index BINARY): every page
-- scanned and sorted the whole trail. The agency is now a column SQLite
-- derives from the caller (it cannot disagree with the caller, which the
-- entry's hash covers), indexed with the time as the subject is. Nothing
-- looked callers up by the whole name, so that index goes.
ALTER TABLE audit_log ADD COLUMN agency TEXT GENERATED ALWAYS AS (
    CASE WHEN substr(caller, 1, 7) = 'agency/'
         THEN substr(caller, 8, instr(substr(caller, 8) || '/', '/') - 1)
         ELSE '' END
) VIRTUAL;
DROP INDEX audit_by_caller;
CREATE INDEX audit_by_agency ON audit_log (agency, at_us);
