-- sml: foreign-keys-off
-- SQLite twin of 0012_drift_runs_per_version.mysql.sql. SQLite cannot drop a table constraint, so
-- the table is rebuilt as its documentation prescribes (https://www.sqlite.org/lang_altertable.html,
-- "Making Other Kinds Of Table Schema Changes"): new table, copy, drop, rename, in one transaction
-- with foreign key enforcement off (the line above asks the migration runner for it), so dropping
-- the old table does not cascade to drift_features, drift_feature_bounds, data_quality_checks and
-- quality_runs; the runner checks every foreign key before it commits.
CREATE TABLE drift_runs_per_version (
    run_id            CHAR(36) NOT NULL,
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
    CONSTRAINT uq_drift_runs_model_version_window UNIQUE (model_name, model_version, window_end)
);
INSERT INTO drift_runs_per_version (
    run_id, model_name, model_version, window_start, window_end, reference_kind, status, n_reference, n_current,
    features_tested, features_drifted, report_uri, parameters, created_at
)
SELECT
    run_id, model_name, model_version, window_start, window_end, reference_kind, status, n_reference, n_current,
    features_tested, features_drifted, report_uri, parameters, created_at
FROM drift_runs;
DROP TABLE drift_runs;
ALTER TABLE drift_runs_per_version RENAME TO drift_runs;
