-- The ledger of applied migrations. The runner applies this file before any other, on every run
-- (it is idempotent), and records it like the rest.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER      NOT NULL PRIMARY KEY,
    name        VARCHAR(255) NOT NULL,
    checksum    CHAR(64)     NOT NULL,
    applied_at  VARCHAR(32)  NOT NULL
);
