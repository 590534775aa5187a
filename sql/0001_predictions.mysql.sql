-- Every statement is safe to rerun (IF NOT EXISTS), so a run that failed half-way resumes; the
-- checksum of the earlier text is in sml.core.db.SUPERSEDED_CHECKSUMS.
-- One row per prediction event (schema version 1). prediction_id is a UUIDv7, so inserts append
-- to the primary-key index; features and probabilities are the event's JSON, stored verbatim.
CREATE TABLE IF NOT EXISTS predictions (
    prediction_id   CHAR(36) CHARACTER SET ascii NOT NULL,
    schema_version  SMALLINT     NOT NULL,
    model_name      VARCHAR(128) NOT NULL,
    model_version   VARCHAR(128) NOT NULL,
    predicted_at    DATETIME(6)  NOT NULL,
    prediction      VARCHAR(255) NOT NULL,
    probabilities   TEXT         NULL,
    features        MEDIUMTEXT   NOT NULL,
    stored_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (prediction_id),
    KEY ix_predictions_model_time (model_name, predicted_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
