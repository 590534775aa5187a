-- SQLite twin of 0005_drift_feature_bounds.mysql.sql.
CREATE TABLE IF NOT EXISTS drift_feature_bounds (
    run_id        CHAR(36)     NOT NULL REFERENCES drift_runs (run_id) ON DELETE CASCADE,
    feature_name  VARCHAR(128) NOT NULL,
    test          VARCHAR(24)  NOT NULL,
    effect_upper  DOUBLE       NULL,
    reason        VARCHAR(24)  NULL,
    PRIMARY KEY (run_id, feature_name, test)
);
