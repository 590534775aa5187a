-- Every statement is safe to rerun (IF NOT EXISTS), so a run that failed half-way resumes; the
-- checksum of the earlier text is in sml.core.db.SUPERSEDED_CHECKSUMS.
-- One row per prediction event (schema version 1); see 0001_predictions.mysql.sql.
-- Timestamps are naive UTC text as SQLAlchemy writes them (YYYY-MM-DD HH:MM:SS.ffffff), so they sort as text.
CREATE TABLE IF NOT EXISTS predictions (
    prediction_id   CHAR(36)     NOT NULL PRIMARY KEY,
    schema_version  SMALLINT     NOT NULL,
    model_name      VARCHAR(128) NOT NULL,
    model_version   VARCHAR(128) NOT NULL,
    predicted_at    DATETIME(6)  NOT NULL,
    prediction      VARCHAR(255) NOT NULL,
    probabilities   TEXT         NULL,
    features        TEXT         NOT NULL,
    stored_at       DATETIME(6)  NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS ix_predictions_model_time ON predictions (model_name, predicted_at);
