-- SQLite twin of 0011_drift_day_summary_counts.mysql.sql: the writer's count of a day that a stored
-- day summary was checked against.
CREATE TABLE IF NOT EXISTS drift_day_summary_counts (
    model_name      VARCHAR(128) NOT NULL,
    model_version   VARCHAR(128) NOT NULL,
    day             DATE         NOT NULL,
    reference_id    CHAR(64)     NOT NULL,
    day_count       BIGINT       NOT NULL,
    PRIMARY KEY (model_name, model_version, day, reference_id)
) WITHOUT ROWID;
