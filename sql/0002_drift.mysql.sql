-- Every statement is safe to rerun (IF NOT EXISTS), so a run that failed half-way resumes; the
-- checksum of the earlier text is in sml.core.db.SUPERSEDED_CHECKSUMS.
-- One drift run per (model, window end): a rerun of the same window replaces its rows.
CREATE TABLE IF NOT EXISTS drift_runs (
    run_id            CHAR(36) CHARACTER SET ascii NOT NULL,
    model_name        VARCHAR(128) NOT NULL,
    model_version     VARCHAR(128) NOT NULL,
    window_start      DATETIME(6)  NOT NULL,
    window_end        DATETIME(6)  NOT NULL,
    reference_kind    VARCHAR(16)  NOT NULL,
    status            VARCHAR(24)  NOT NULL,
    n_reference       INTEGER      NOT NULL,
    n_current         INTEGER      NOT NULL,
    features_tested   INTEGER      NOT NULL,
    features_drifted  INTEGER      NOT NULL,
    report_uri        VARCHAR(1024) NULL,
    parameters        TEXT         NOT NULL,
    created_at        DATETIME(6)  NOT NULL,
    PRIMARY KEY (run_id),
    UNIQUE KEY uq_drift_runs_model_window (model_name, window_end)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS drift_features (
    run_id        CHAR(36) CHARACTER SET ascii NOT NULL,
    feature_name  VARCHAR(128) NOT NULL,
    test          VARCHAR(24)  NOT NULL,
    kind          VARCHAR(16)  NOT NULL,
    statistic     DOUBLE       NULL,
    p_value       DOUBLE       NULL,
    p_adjusted    DOUBLE       NULL,
    effect_size   DOUBLE       NULL,
    effect_floor  DOUBLE       NULL,
    n_reference   INTEGER      NOT NULL,
    n_current     INTEGER      NOT NULL,
    verdict       VARCHAR(24)  NOT NULL,
    PRIMARY KEY (run_id, feature_name, test),
    CONSTRAINT fk_drift_features_run FOREIGN KEY (run_id) REFERENCES drift_runs (run_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
