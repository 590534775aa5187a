-- SQLite twin of 0007_predict_refusals.mysql.sql: values predict refused, per request, field and reason.
CREATE TABLE IF NOT EXISTS predict_refusals (
    refusal_id      CHAR(36)     NOT NULL,
    field_name      VARCHAR(128) NOT NULL,
    reason          VARCHAR(32)  NOT NULL,
    refused_count   INTEGER      NOT NULL,
    model_name      VARCHAR(128) NOT NULL,
    model_version   VARCHAR(128) NULL,
    refused_at      DATETIME(6)  NOT NULL,
    stored_at       DATETIME(6)  NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    PRIMARY KEY (refusal_id, field_name, reason)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS ix_predict_refusals_model_time ON predict_refusals (model_name, refused_at);
