-- Per test of a drift run (issue 18): the one-sided 95% upper bound of its effect (the smallest shift the
-- data rule out) and why it is INCONCLUSIVE (underpowered, near_floor, below_min_samples, empty_sample).
-- A table beside drift_features rather than new columns, so the file can rerun (MySQL has no ADD COLUMN IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS drift_feature_bounds (
    run_id        CHAR(36) CHARACTER SET ascii NOT NULL,
    feature_name  VARCHAR(128) NOT NULL,
    test          VARCHAR(24)  NOT NULL,
    effect_upper  DOUBLE       NULL,
    reason        VARCHAR(24)  NULL,
    PRIMARY KEY (run_id, feature_name, test),
    CONSTRAINT fk_drift_feature_bounds_run FOREIGN KEY (run_id) REFERENCES drift_runs (run_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
