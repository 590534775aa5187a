-- SQLite has no partitions: predictions keeps its primary key (prediction_id) and the retention
-- step (sml.core.retention) deletes old rows day by day. This file keeps the version numbers of
-- the two dialects in step.
SELECT 1;
