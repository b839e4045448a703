-- Citizens' consents to release record types that require one.
CREATE TABLE consents (
    subject_id     TEXT   NOT NULL,
    consumer       TEXT   NOT NULL,
    record_type    TEXT   NOT NULL,
    purpose        TEXT   NOT NULL,
    granted_at_us  BIGINT NOT NULL,
    expires_at_us  BIGINT NOT NULL,
    revoked_at_us  BIGINT,
    PRIMARY KEY (subject_id, consumer, record_type, purpose)
);
