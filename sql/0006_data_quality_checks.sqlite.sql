-- SQLite twin of 0006_data_quality_checks.mysql.sql.
CREATE TABLE IF NOT EXISTS data_quality_checks (
    run_id        CHAR(36)     NOT NULL REFERENCES drift_runs (run_id) ON DELETE CASCADE,
    feature_name  VARCHAR(128) NOT NULL,
    check_name    VARCHAR(24)  NOT NULL,
    value         DOUBLE       NOT NULL,
    threshold     DOUBLE       NOT NULL,
    violation_count INTEGER    NOT NULL,
    n_values      INTEGER      NOT NULL,
    violated      BOOLEAN      NOT NULL,
    PRIMARY KEY (run_id, feature_name, check_name)
);
