-- A day's window summaries (sml.monitoring.daily), computed once by the daily step: the rows of one
-- model predicted in one UTC day, counted against one reference (the manifest version whose
-- training reference it is, and reference_id, a SHA-256 of the reference's cell edges and
-- categories). n_rows is the rows the summary counted: the weekly run uses a day only while the
-- day's COUNT still equals it, and the daily step recomputes a day whose count changed (late or
-- replayed events). summary is WindowSummary.to_json(). One DDL statement, so the migration is
-- resumable; the drift user's grants cover it (drift_*).
CREATE TABLE IF NOT EXISTS drift_day_summaries (
    model_name      VARCHAR(128) NOT NULL,
    model_version   VARCHAR(128) NOT NULL,
    day             DATE         NOT NULL,
    reference_id    CHAR(64) CHARACTER SET ascii NOT NULL,
    n_rows          BIGINT       NOT NULL,
    summary         LONGTEXT     NOT NULL,
    computed_at     DATETIME(6)  NOT NULL,
    PRIMARY KEY (model_name, model_version, day, reference_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
