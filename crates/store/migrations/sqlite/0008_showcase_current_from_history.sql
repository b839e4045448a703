-- The current version of a record is the newest version the history holds:
-- readers take, for each (record_type, subject_id, record_key), the history
-- row no newer version follows, with one seek in the history's key index.
-- The current table only repeated that: every write kept it in step in the
-- same transaction, so dropping it loses nothing. Each ingested record then
-- writes one table and one index instead of two of each, and each read
-- seeks one index instead of two (found by the benchmark, see
-- docs/PROFILING.md, session 19).
DROP TABLE showcase_records;
