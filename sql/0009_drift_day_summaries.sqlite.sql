-- SQLite twin of 0009_drift_day_summaries.mysql.sql: a day's window summaries per model, manifest
-- version, UTC day and reference.
CREATE TABLE IF NOT EXISTS drift_day_summaries (
    model_name      VARCHAR(128) NOT NULL,
    model_version   VARCHAR(128) NOT NULL,
    day             DATE         NOT NULL,
    reference_id    CHAR(64)     NOT NULL,
    n_rows          BIGINT       NOT NULL,
    summary         TEXT         NOT NULL,
    computed_at     DATETIME(6)  NOT NULL,
    PRIMARY KEY (model_name, model_version, day, reference_id)
) WITHOUT ROWID;
