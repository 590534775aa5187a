-- Model quality of a drift run (issue 16): one row per run in quality_runs and one per metric in
-- quality_metrics, both removed with their drift_runs row (a rerun of the same window replaces them).
-- CREATE TABLE IF NOT EXISTS throughout, so a migration interrupted between its statements resumes.
CREATE TABLE IF NOT EXISTS quality_runs (
    run_id                    CHAR(36) CHARACTER SET ascii NOT NULL,
    status                    VARCHAR(24)  NOT NULL,
    reason                    VARCHAR(512) NOT NULL,
    metric                    VARCHAR(32)  NOT NULL,
    reference_value           DOUBLE       NULL,
    tolerance                 DOUBLE       NOT NULL,
    n_predictions             INTEGER      NOT NULL,
    n_labelled                INTEGER      NOT NULL,
    n_labels_outside_classes  INTEGER      NOT NULL,
    n_unmatched_labels        INTEGER      NOT NULL,
    n_estimated               INTEGER      NULL,
    delay_p50_seconds         DOUBLE       NULL,
    delay_p90_seconds         DOUBLE       NULL,
    delay_p99_seconds         DOUBLE       NULL,
    delay_max_seconds         DOUBLE       NULL,
    reliability               TEXT         NOT NULL,
    expected_confusion        TEXT         NULL,
    parameters                TEXT         NOT NULL,
    PRIMARY KEY (run_id),
    CONSTRAINT fk_quality_runs_run FOREIGN KEY (run_id) REFERENCES drift_runs (run_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS quality_metrics (
    run_id           CHAR(36) CHARACTER SET ascii NOT NULL,
    source           VARCHAR(16)  NOT NULL,
    metric           VARCHAR(32)  NOT NULL,
    class_label      VARCHAR(255) NOT NULL,
    value            DOUBLE       NULL,
    ci_low           DOUBLE       NULL,
    ci_high          DOUBLE       NULL,
    interval_method  VARCHAR(24)  NULL,
    PRIMARY KEY (run_id, source, metric, class_label),
    CONSTRAINT fk_quality_metrics_run FOREIGN KEY (run_id) REFERENCES quality_runs (run_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
