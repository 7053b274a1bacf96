//! The archive's errors.

/// What can go wrong reading or writing the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An object could not be encoded or decoded as an archive object.
    #[error("archive object {key}: {reason}")]
    Format {
        /// The object (its key, or topic/partition/first offset).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object store failed (network, credentials, missing bucket).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The manifest's PostgreSQL table failed.
    #[error("archive manifest: {0}")]
    Manifest(#[from] tokio_postgres::Error),
    /// The object store's configuration is incomplete or wrong.
    #[error("archive configuration: {0}")]
    Config(String),
    /// Records were handed over out of order or from several partitions.
    #[error("archive input: {0}")]
    Input(String),
}
