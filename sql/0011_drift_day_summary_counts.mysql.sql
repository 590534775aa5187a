-- The writer's count of a day (prediction_day_counts.n_rows) that a stored day summary was checked
-- against: the daily step reads the count before the day's rows and keeps it here only when it
-- equalled the rows the summary counted. While the day's count still equals day_count, the day is
-- unchanged without a COUNT(*) over its rows; a summary without a row here (stored before this
-- table, or whose count did not agree) is checked with COUNT(*) as before. Its own table rather
-- than a column of drift_day_summaries, so the migration stays one resumable statement on MySQL
-- and SQLite alike; written and deleted with the summary in one transaction. Grants: drift_*.
CREATE TABLE IF NOT EXISTS drift_day_summary_counts (
    model_name      VARCHAR(128) NOT NULL,
    model_version   VARCHAR(128) NOT NULL,
    day             DATE         NOT NULL,
    reference_id    CHAR(64) CHARACTER SET ascii NOT NULL,
    day_count       BIGINT       NOT NULL,
    PRIMARY KEY (model_name, model_version, day, reference_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
