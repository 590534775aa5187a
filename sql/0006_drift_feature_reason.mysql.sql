-- Why a test is INCONCLUSIVE (underpowered, near_floor, below_min_samples, empty_sample); NULL when it decided.
ALTER TABLE drift_features ADD COLUMN reason VARCHAR(24) NULL;
