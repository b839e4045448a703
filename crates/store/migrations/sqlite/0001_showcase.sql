-- The showcase: the current version of every record, by (type, subject, key).
-- Lookups are by (record_type, subject_id), a prefix of the primary key, so a
-- WITHOUT ROWID table answers them from one b-tree seek whatever its size.
CREATE TABLE showcase_records (
    record_type     TEXT    NOT NULL,
    subject_id      TEXT    NOT NULL,
    record_key      TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    record_id       TEXT    NOT NULL,
    status          INTEGER NOT NULL,
    content_hash    BLOB    NOT NULL,
    -- The envelope exactly as it came off Kafka (protobuf govbus.v1.Record).
    envelope        BLOB    NOT NULL,
    kafka_topic     TEXT    NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    ingested_at_us  INTEGER NOT NULL,
    PRIMARY KEY (record_type, subject_id, record_key)
) WITHOUT ROWID;

-- Every version ever ingested, once each: the versioned half of the showcase.
CREATE TABLE showcase_history (
    record_type     TEXT    NOT NULL,
    subject_id      TEXT    NOT NULL,
    record_key      TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    record_id       TEXT    NOT NULL,
    status          INTEGER NOT NULL,
    content_hash    BLOB    NOT NULL,
    envelope        BLOB    NOT NULL,
    kafka_topic     TEXT    NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    ingested_at_us  INTEGER NOT NULL,
    PRIMARY KEY (record_type, subject_id, record_key, version)
) WITHOUT ROWID;
