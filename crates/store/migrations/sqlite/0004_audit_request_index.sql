-- Operators look requests up by id (govbus trace-of).
CREATE INDEX audit_by_request ON audit_log (request_id);
