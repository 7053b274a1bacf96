//! The manifest: one PostgreSQL row per archived object (`factline_archive_objects`), written in
//! the archiver's transaction with its positions, and the question readers ask of it: which
//! objects cover these offsets, and which offsets does no object cover.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::GenericClient;

use crate::error::ArchiveError;
use crate::object::ObjectMeta;

/// The manifest's table, created if missing.
pub const MIGRATION: &str = "CREATE TABLE IF NOT EXISTS factline_archive_objects (
    topic text NOT NULL,
    partition integer NOT NULL,
    first_offset bigint NOT NULL,
    last_offset bigint NOT NULL,
    first_time timestamptz,
    last_time timestamptz,
    records bigint NOT NULL,
    bytes bigint NOT NULL,
    sha256 text NOT NULL,
    object_key text NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, first_offset),
    CHECK (last_offset >= first_offset)
)";

/// One object of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// What the object holds.
    pub meta: ObjectMeta,
    /// Its key in the bucket.
    pub key: String,
}

/// Which objects cover a range of offsets, and the sub-ranges none covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Coverage {
    /// The objects overlapping the range, in offset order.
    pub objects: Vec<ManifestEntry>,
    /// Ranges `(first, last)` (inclusive) of the asked range that no object covers.
    pub missing: Vec<(i64, i64)>,
}

/// The manifest's queries.
pub struct Manifest;

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}

impl Manifest {
    /// Creates the table if it does not exist.
    pub async fn migrate(client: &impl GenericClient) -> Result<(), ArchiveError> {
        client.batch_execute(MIGRATION).await?;
        Ok(())
    }

    /// Records `meta`'s object at `key`. Recording the same object again changes nothing; an
    /// object at the same first offset with other contents is an error (two writers disagree).
    pub async fn record(
        client: &impl GenericClient,
        meta: &ObjectMeta,
        key: &str,
    ) -> Result<(), ArchiveError> {
        Manifest::record_all(client, &[(meta.clone(), key.to_owned())]).await
    }

    /// Records every `(meta, key)` object in one statement, as [`Manifest::record`] does one.
    pub async fn record_all(
        client: &impl GenericClient,
        objects: &[(ObjectMeta, String)],
    ) -> Result<(), ArchiveError> {
        if objects.is_empty() {
            return Ok(());
        }
        let metas = || objects.iter().map(|(meta, _)| meta);
        let topics: Vec<&str> = metas().map(|m| m.topic.as_str()).collect();
        let partitions: Vec<i32> = metas().map(|m| m.partition).collect();
        let firsts: Vec<i64> = metas().map(|m| m.first_offset).collect();
        let lasts: Vec<i64> = metas().map(|m| m.last_offset).collect();
        let first_times: Vec<Option<DateTime<Utc>>> =
            metas().map(|m| time(m.first_time_ms)).collect();
        let last_times: Vec<Option<DateTime<Utc>>> =
            metas().map(|m| time(m.last_time_ms)).collect();
        let records: Vec<i64> = metas().map(|m| m.records).collect();
        let bytes: Vec<i64> = metas().map(|m| m.bytes).collect();
        let sha256s: Vec<&str> = metas().map(|m| m.sha256.as_str()).collect();
        let keys: Vec<&str> = objects.iter().map(|(_, key)| key.as_str()).collect();
        let inserted = client
            .execute(
                "INSERT INTO factline_archive_objects (topic, partition, first_offset, \
                 last_offset, first_time, last_time, records, bytes, sha256, object_key) \
                 SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], \
                 $5::timestamptz[], $6::timestamptz[], $7::bigint[], $8::bigint[], $9::text[], \
                 $10::text[]) ON CONFLICT DO NOTHING",
                &[
                    &topics,
                    &partitions,
                    &firsts,
                    &lasts,
                    &first_times,
                    &last_times,
                    &records,
                    &bytes,
                    &sha256s,
                    &keys,
                ],
            )
            .await?;
        if inserted == objects.len() as u64 {
            return Ok(());
        }
        // some were there already: each must be the same object
        let rows = client
            .query(
                "SELECT o.topic, o.partition, o.first_offset, o.sha256 \
                 FROM factline_archive_objects o \
                 JOIN unnest($1::text[], $2::int[], $3::bigint[]) AS a(topic, partition, first_offset) \
                 USING (topic, partition, first_offset)",
                &[&topics, &partitions, &firsts],
            )
            .await?;
        for row in rows {
            let (topic, partition, first): (String, i32, i64) =
                (row.get(0), row.get(1), row.get(2));
            let recorded: String = row.get(3);
            let ours = metas()
                .find(|m| m.topic == topic && m.partition == partition && m.first_offset == first);
            if let Some(meta) = ours.filter(|m| m.sha256 != recorded) {
                return Err(ArchiveError::Input(format!(
                    "the manifest already holds another object at {}/{}@{} (sha256 {recorded}, not {})",
                    meta.topic, meta.partition, meta.first_offset, meta.sha256
                )));
            }
        }
        Ok(())
    }

    /// The offset after the last archived one of `topic`'s `partition`, if anything is archived.
    pub async fn next_offset(
        client: &impl GenericClient,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, ArchiveError> {
        let partitions = [(topic.to_owned(), partition)];
        let mut next = Manifest::next_offsets(client, &partitions).await?;
        Ok(next.remove(&partitions[0]))
    }

    /// [`Manifest::next_offset`] of each of `partitions` in one query; a partition with nothing
    /// archived is absent.
    pub async fn next_offsets(
        client: &impl GenericClient,
        partitions: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), i64>, ArchiveError> {
        let topics: Vec<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
        let numbers: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
        let rows = client
            .query(
                "SELECT o.topic, o.partition, max(o.last_offset) + 1 \
                 FROM factline_archive_objects o \
                 JOIN unnest($1::text[], $2::int[]) AS a(topic, partition) USING (topic, partition) \
                 GROUP BY o.topic, o.partition",
                &[&topics, &numbers],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| ((row.get(0), row.get(1)), row.get(2)))
            .collect())
    }

    /// The objects covering offsets `from..=to` of `topic`'s `partition`, and what none covers.
    pub async fn coverage(
        client: &impl GenericClient,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Result<Coverage, ArchiveError> {
        let rows = client
            .query(
                "SELECT first_offset, last_offset, \
                        (extract(epoch FROM first_time) * 1000)::bigint, \
                        (extract(epoch FROM last_time) * 1000)::bigint, \
                        records, bytes, sha256, object_key \
                 FROM factline_archive_objects \
                 WHERE topic = $1 AND partition = $2 AND last_offset >= $3 AND first_offset <= $4 \
                 ORDER BY first_offset",
                &[&topic, &partition, &from, &to],
            )
            .await?;
        let objects: Vec<ManifestEntry> = rows
            .iter()
            .map(|row| ManifestEntry {
                meta: ObjectMeta {
                    topic: topic.to_owned(),
                    partition,
                    first_offset: row.get(0),
                    last_offset: row.get(1),
                    first_time_ms: row.get(2),
                    last_time_ms: row.get(3),
                    records: row.get(4),
                    bytes: row.get(5),
                    sha256: row.get(6),
                },
                key: row.get(7),
            })
            .collect();
        let missing = gaps(
            from,
            to,
            objects
                .iter()
                .map(|o| (o.meta.first_offset, o.meta.last_offset)),
        );
        Ok(Coverage { objects, missing })
    }
}

/// The sub-ranges of `from..=to` that none of `ranges` (sorted by start, inclusive) covers.
pub fn gaps(from: i64, to: i64, ranges: impl IntoIterator<Item = (i64, i64)>) -> Vec<(i64, i64)> {
    let mut missing = Vec::new();
    let mut next = from;
    for (first, last) in ranges {
        if next > to {
            break;
        }
        if first > next {
            missing.push((next, (first - 1).min(to)));
        }
        next = next.max(last.saturating_add(1));
    }
    if next <= to {
        missing.push((next, to));
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::gaps;

    #[test]
    fn gaps_are_the_uncovered_sub_ranges() {
        assert_eq!(gaps(0, 9, [(0, 4), (5, 9)]), vec![]);
        assert_eq!(gaps(0, 9, [(2, 4), (7, 8)]), vec![(0, 1), (5, 6), (9, 9)]);
        assert_eq!(gaps(3, 5, [(0, 10)]), vec![]);
        assert_eq!(gaps(0, 5, []), vec![(0, 5)]);
        assert_eq!(gaps(5, 6, [(0, 2), (8, 9)]), vec![(5, 6)]);
        assert_eq!(gaps(0, 9, [(0, 3), (2, 5)]), vec![(6, 9)]);
    }
}
