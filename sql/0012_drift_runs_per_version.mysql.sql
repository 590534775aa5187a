-- One stored drift run per (model, version, window end): a run of one version no longer replaces
-- the stored run of another version for the same window (the scheduled run checks the champion;
-- `sml drift --version` checks any other, and each keeps its own record). A rerun of the same
-- version and window still replaces its rows.
-- MySQL 8 has no DROP INDEX IF EXISTS, so the change is one ALTER (all of it or none) prepared only
-- while the old key exists: every statement below is safe to rerun.
SET @sml_0012 = IF(
    (SELECT COUNT(*) FROM information_schema.statistics
     WHERE table_schema = DATABASE() AND table_name = 'drift_runs' AND index_name = 'uq_drift_runs_model_window') > 0,
    'ALTER TABLE drift_runs DROP INDEX uq_drift_runs_model_window, ADD UNIQUE KEY uq_drift_runs_model_version_window (model_name, model_version, window_end)',
    'DO 0'
);
PREPARE sml_0012 FROM @sml_0012;
EXECUTE sml_0012;
DEALLOCATE PREPARE sml_0012;
