-- The agencies' own databases, where their systems write outbox rows.
CREATE DATABASE fhdy OWNER govbus;
CREATE DATABASE interior OWNER govbus;
