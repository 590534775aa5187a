-- SQLite twin of 0003_ground_truth.mysql.sql: one label per prediction, latest labelled_at wins.
CREATE TABLE IF NOT EXISTS ground_truth (
    prediction_id   CHAR(36)     NOT NULL PRIMARY KEY,
    label           VARCHAR(255) NOT NULL,
    labelled_at     DATETIME(6)  NOT NULL,
    source          VARCHAR(128) NULL,
    stored_at       DATETIME(6)  NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS ix_ground_truth_labelled_at ON ground_truth (labelled_at);
