-- The one-sided 95% upper bound of each test's effect (issue 18): the smallest shift the data rule out.
ALTER TABLE drift_features ADD COLUMN effect_upper DOUBLE NULL;
