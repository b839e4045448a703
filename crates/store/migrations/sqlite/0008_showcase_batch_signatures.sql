-- The signature parts every record of a signed batch shares (signer, key
-- id, certificate, signing time, signature, Merkle root and tree size:
-- ~700 of an envelope's ~1,470 bytes) are stored once per batch, under the
-- SHA-256 of their bytes. A history row whose signature_digest is set holds
-- the rest of its envelope; the envelope as consumed decodes from the two
-- concatenated (protobuf merges a message field that appears twice; see
-- crates/store/src/stored_envelope.rs). Rows written before, and envelopes
-- not signed in a batch, keep their whole envelope and no digest. Found by
-- the benchmark: the ingest's writer is its slower stage and its cost grows
-- with the bytes it writes (docs/PROFILING.md).
CREATE TABLE showcase_batch_signatures (
    digest    BLOB NOT NULL PRIMARY KEY,
    signature BLOB NOT NULL
) WITHOUT ROWID;
ALTER TABLE showcase_history ADD COLUMN signature_digest BLOB;
