-- The showcase: the current version of every record, by (type, subject, key).
-- Lookups are by (record_type, subject_id), a prefix of the primary key.
CREATE TABLE showcase_records (
    record_type     TEXT    NOT NULL,
    subject_id      TEXT    NOT NULL,
    record_key      TEXT    NOT NULL,
    version         BIGINT NOT NULL,
    record_id       TEXT    NOT NULL,
    status          BIGINT NOT NULL,
    content_hash    BYTEA    NOT NULL,
    -- The envelope exactly as it came off Kafka (protobuf govbus.v1.Record).
    envelope        BYTEA    NOT NULL,
    kafka_topic     TEXT    NOT NULL,
    kafka_partition BIGINT NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    ingested_at_us  BIGINT NOT NULL,
    PRIMARY KEY (record_type, subject_id, record_key)
);

-- Every version ever ingested, once each: the versioned half of the showcase.
CREATE TABLE showcase_history (
    record_type     TEXT    NOT NULL,
    subject_id      TEXT    NOT NULL,
    record_key      TEXT    NOT NULL,
    version         BIGINT NOT NULL,
    record_id       TEXT    NOT NULL,
    status          BIGINT NOT NULL,
    content_hash    BYTEA    NOT NULL,
    envelope        BYTEA    NOT NULL,
    kafka_topic     TEXT    NOT NULL,
    kafka_partition BIGINT NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    ingested_at_us  BIGINT NOT NULL,
    PRIMARY KEY (record_type, subject_id, record_key, version)
);
