-- predictions partitioned by day of predicted_at, so retention drops a day's partition (instant,
-- frees the disk) instead of deleting its rows (seconds per million rows, frees nothing).
-- MySQL requires every unique key of a partitioned table to hold the partitioning column, hence
-- the primary key (prediction_id, predicted_at); the writer looks ids up before inserting, so a
-- replay is still skipped and an event reusing an id with other content is still detected.
-- One statement: it copies the table once (writes wait on its lock; the writer's events wait in
-- SQS), and a rerun is safe. Everything lands in pmax; the retention step (sml.core.retention)
-- splits pmax into day partitions and drops the days past SML_RETENTION_DAYS.
ALTER TABLE predictions
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (prediction_id, predicted_at)
    PARTITION BY RANGE COLUMNS (predicted_at) (PARTITION pmax VALUES LESS THAN (MAXVALUE));
