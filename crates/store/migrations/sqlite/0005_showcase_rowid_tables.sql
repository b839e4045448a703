-- The showcase tables become rowid tables with a unique index on the key.
-- A WITHOUT ROWID table keeps its rows in index b-tree cells, which hold
-- at most about 1 KB locally on 4 KB pages: every envelope (about 1.2 KB
-- signed) spilled into an overflow page of its own, so a record took 9.4 KB
-- on disk and each query read an extra page (found by the benchmark, see
-- docs/PROFILING.md). A rowid table holds rows up to about 4 KB in its
-- leaves; the unique index still finds a subject's records with one seek.

CREATE TABLE showcase_records_rowid (
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
    ingested_at_us  INTEGER NOT NULL
);
INSERT INTO showcase_records_rowid (record_type, subject_id, record_key, version, record_id, status, content_hash, envelope, kafka_topic, kafka_partition, kafka_offset, ingested_at_us)
    SELECT record_type, subject_id, record_key, version, record_id, status, content_hash, envelope, kafka_topic, kafka_partition, kafka_offset, ingested_at_us FROM showcase_records;
DROP TABLE showcase_records;
ALTER TABLE showcase_records_rowid RENAME TO showcase_records;
CREATE UNIQUE INDEX showcase_records_key ON showcase_records (record_type, subject_id, record_key);

CREATE TABLE showcase_history_rowid (
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
    ingested_at_us  INTEGER NOT NULL
);
INSERT INTO showcase_history_rowid (record_type, subject_id, record_key, version, record_id, status, content_hash, envelope, kafka_topic, kafka_partition, kafka_offset, ingested_at_us)
    SELECT record_type, subject_id, record_key, version, record_id, status, content_hash, envelope, kafka_topic, kafka_partition, kafka_offset, ingested_at_us FROM showcase_history;
DROP TABLE showcase_history;
ALTER TABLE showcase_history_rowid RENAME TO showcase_history;
CREATE UNIQUE INDEX showcase_history_key ON showcase_history (record_type, subject_id, record_key, version);
