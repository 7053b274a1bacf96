//! Reading a partition's history back from the archive: which objects hold offsets
//! `from..=to`, their records in offset order, and a clear error naming the offsets that no
//! object holds, so a rebuild never silently skips history.

use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

use crate::error::ArchiveError;
use crate::manifest::{Manifest, ManifestEntry};
use crate::object::ArchiveObject;
use crate::record::ArchivedRecord;
use crate::store::Bucket;

/// Why a range could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No archived object covers these offsets.
    #[error("the archive holds no records of {topic}/{partition} at offsets {first}..={last}")]
    Missing {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The first missing offset.
        first: i64,
        /// The last missing offset.
        last: i64,
    },
    /// An object's bytes are not what the manifest recorded.
    #[error("archive object {key} does not match its manifest entry (sha256 {found}, recorded {recorded})")]
    Corrupt {
        /// The object's key.
        key: String,
        /// The checksum of the bytes read.
        found: String,
        /// The checksum in the manifest.
        recorded: String,
    },
    /// The bucket, the manifest or the object's format failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// The manifest entries of the objects covering `from..=to`, or [`ReadError::Missing`] naming
/// the first range no object covers.
pub async fn objects_for(
    client: &impl GenericClient,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Vec<ManifestEntry>, ReadError> {
    let coverage = Manifest::coverage(client, topic, partition, from, to).await?;
    if let Some(&(first, last)) = coverage.missing.first() {
        return Err(ReadError::Missing {
            topic: topic.to_owned(),
            partition,
            first,
            last,
        });
    }
    Ok(coverage.objects)
}

/// The records of `entry`'s object with offsets in `from..=to`, checked against the manifest.
pub async fn records_of(
    bucket: &Bucket,
    entry: &ManifestEntry,
    from: i64,
    to: i64,
) -> Result<Vec<ArchivedRecord>, ReadError> {
    let bytes = bucket.get(&entry.key).await?;
    let found = hex::encode(Sha256::digest(&bytes));
    if found != entry.meta.sha256 {
        return Err(ReadError::Corrupt {
            key: entry.key.clone(),
            found,
            recorded: entry.meta.sha256.clone(),
        });
    }
    let (_, mut records) = ArchiveObject::decode(&bytes)?;
    records.retain(|r| (from..=to).contains(&r.offset));
    Ok(records)
}

/// Every archived record of `topic`'s `partition` with offsets in `from..=to`, in offset
/// order; for ranges that fit in memory (tests, tools). Rebuilds go object by object with
/// [`objects_for`] and [`records_of`].
pub async fn read_range(
    client: &impl GenericClient,
    bucket: &Bucket,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Vec<ArchivedRecord>, ReadError> {
    let mut records = Vec::new();
    for entry in objects_for(client, topic, partition, from, to).await? {
        records.extend(records_of(bucket, &entry, from, to).await?);
    }
    Ok(records)
}
