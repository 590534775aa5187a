-- Values predict refused (HTTP 4xx naming the field), from refusal events (event type 3): one row per
-- refused request, field and reason code. Replays and redeliveries insert nothing new (the key is
-- the event's refusal_id with the field and reason). Data quality sums refused_count per field over
-- a window (model_name, refused_at). One DDL statement, so the migration is resumable.
CREATE TABLE IF NOT EXISTS predict_refusals (
    refusal_id      CHAR(36) CHARACTER SET ascii NOT NULL,
    field_name      VARCHAR(128) NOT NULL,
    reason          VARCHAR(32)  NOT NULL,
    refused_count   INTEGER      NOT NULL,
    model_name      VARCHAR(128) NOT NULL,
    model_version   VARCHAR(128) NULL,
    refused_at      DATETIME(6)  NOT NULL,
    stored_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (refusal_id, field_name, reason),
    KEY ix_predict_refusals_model_time (model_name, refused_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
