-- Data-quality checks of a drift run against the training profile (issue 18): one row per feature and check.
CREATE TABLE IF NOT EXISTS data_quality_checks (
    run_id        CHAR(36) CHARACTER SET ascii NOT NULL,
    feature_name  VARCHAR(128) NOT NULL,
    check_name    VARCHAR(24)  NOT NULL,
    value         DOUBLE       NOT NULL,
    threshold     DOUBLE       NOT NULL,
    violation_count INTEGER    NOT NULL,
    n_values      INTEGER      NOT NULL,
    violated      BOOLEAN      NOT NULL,
    PRIMARY KEY (run_id, feature_name, check_name),
    CONSTRAINT fk_data_quality_checks_run FOREIGN KEY (run_id) REFERENCES drift_runs (run_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
