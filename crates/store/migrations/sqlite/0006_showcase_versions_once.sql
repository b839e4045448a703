-- Each version's envelope is stored once, in the history. The current table
-- keeps which version is current (and its key columns); readers take the
-- envelope from the history row of that version, which every write puts
-- there in the same transaction. An envelope is most of a row's bytes (~1.5
-- KB with its batch inclusion proof), so this about halves the showcase's
-- size and the ingest's writes (found by the benchmark, see
-- docs/PROFILING.md).
ALTER TABLE showcase_records DROP COLUMN envelope;
