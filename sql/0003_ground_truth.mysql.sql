-- Ground truth (event type 2): one label per prediction, keyed by prediction_id. A label may arrive
-- weeks late and before its prediction row is stored, so there is no foreign key to predictions.
-- A second label for the same prediction replaces the first only when its labelled_at is later
-- (latest labelled_at wins). One DDL statement, so the migration is resumable.
CREATE TABLE IF NOT EXISTS ground_truth (
    prediction_id   CHAR(36) CHARACTER SET ascii NOT NULL,
    label           VARCHAR(255) NOT NULL,
    labelled_at     DATETIME(6)  NOT NULL,
    source          VARCHAR(128) NULL,
    stored_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (prediction_id),
    KEY ix_ground_truth_labelled_at (labelled_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
