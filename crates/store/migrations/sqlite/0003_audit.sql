-- The audit trail: one entry per evidence request, allowed or denied, in a
-- hash chain per broker instance (`chain`). entry_hash = SHA-256(prev_hash ||
-- canonical entry); see govbus_store::audit.
CREATE TABLE audit_log (
    chain       TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    at_us       INTEGER NOT NULL,
    caller      TEXT    NOT NULL,
    subject_id  TEXT    NOT NULL,
    record_type TEXT    NOT NULL,
    purpose     TEXT    NOT NULL,
    fields      TEXT    NOT NULL,
    decision    TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    trace_id    TEXT    NOT NULL,
    records     INTEGER NOT NULL,
    prev_hash   BLOB    NOT NULL,
    entry_hash  BLOB    NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX audit_by_subject ON audit_log (subject_id, at_us);
CREATE INDEX audit_by_caller ON audit_log (caller, at_us);

-- Signed statements "chain C had entry_hash H at seq S", by the broker.
CREATE TABLE audit_checkpoints (
    chain        TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    entry_hash   BLOB    NOT NULL,
    signed_at_us INTEGER NOT NULL,
    certificate  BLOB    NOT NULL,
    signature    BLOB    NOT NULL,
    PRIMARY KEY (chain, seq)
);

-- How far each chain has been published to the Kafka audit topic.
CREATE TABLE audit_published (
    chain    TEXT    NOT NULL PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
