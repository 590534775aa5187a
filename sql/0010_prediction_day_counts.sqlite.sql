-- SQLite twin of 0010_prediction_day_counts.mysql.sql: rows inserted per model, model version and
-- UTC day of predicted_at, kept by the writer in the transaction of its insert.
CREATE TABLE IF NOT EXISTS prediction_day_counts (
    model_name      VARCHAR(128) NOT NULL,
    model_version   VARCHAR(128) NOT NULL,
    day             DATE         NOT NULL,
    n_rows          BIGINT       NOT NULL,
    PRIMARY KEY (model_name, model_version, day)
) WITHOUT ROWID;
