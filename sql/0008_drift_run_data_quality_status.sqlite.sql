-- OK or VIOLATIONS: whether any data-quality check of the run broke its threshold (NULL for runs before issue 18).
ALTER TABLE drift_runs ADD COLUMN data_quality_status VARCHAR(16) NULL;
