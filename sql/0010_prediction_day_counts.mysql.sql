-- Rows of predictions per model, model version and UTC day of predicted_at, kept by the writer in the
-- transaction of its insert (sml.core.day_counts): only rows actually inserted count (a redelivered
-- or replayed event that is skipped adds nothing), so the weekly run and the daily step can tell a
-- day changed without counting its rows. Rows stored before this table existed, or by anything but
-- the writer's insert, are not counted: a stored day summary relies on a day's count only when it
-- equalled the rows counted (drift_day_summary_counts), else the day is counted as before.
-- The retention step deletes the counts of the days it drops. One DDL statement (resumable).
CREATE TABLE IF NOT EXISTS prediction_day_counts (
    model_name      VARCHAR(128) NOT NULL,
    model_version   VARCHAR(128) NOT NULL,
    day             DATE         NOT NULL,
    n_rows          BIGINT       NOT NULL,
    PRIMARY KEY (model_name, model_version, day)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
