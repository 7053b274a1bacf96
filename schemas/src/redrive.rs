//! What a dead-letter redrive leaves behind, shared by the `factline` CLI that redrives and the
//! read API that counts the dead letters still pending: the header marking a redriven copy and
//! the table recording every redriven record.
//!
//! A redrive re-produces a dead-lettered record, byte for byte with its original headers (so
//! its `event_id`), to the partition it came from, plus [`HEADER_REDRIVEN_FROM`]. The
//! projectors that applied it skip the copy as a duplicate (within their dedupe window); the
//! ones that dead-lettered it judge it again. One row of [`REDRIVES_TABLE`] per original
//! record (topic, partition, offset) says where its copy went, so a second redrive of the same
//! dead letter sends nothing.

/// Header on a redriven copy: the original record's `topic:partition:offset`.
pub const HEADER_REDRIVEN_FROM: &str = "redriven_from";

/// The table of redriven records, in the same schema as the projector runtime's tables.
pub const REDRIVES_TABLE: &str = "factline_dead_letter_redrives";

/// Its DDL, idempotent (run by the redriving side before it records anything).
pub const REDRIVES_DDL: &str = "
CREATE TABLE IF NOT EXISTS factline_dead_letter_redrives (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    \"offset\"    bigint      NOT NULL,
    event_id    uuid,
    to_partition integer    NOT NULL,
    to_offset   bigint      NOT NULL,
    redriven_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, \"offset\")
);
";
