//! [`AppliedIds`]: the event ids applied to one read-model row, kept in the row itself (a
//! `bytea` column of 16-byte ids, in no particular order: written sorted from memory, appended
//! to by a projection that merges in SQL, as `order_summary` does), for projections that dedupe
//! in their own rows instead of the runtime's `factline_projector_applied` table (see
//! [`Projection::applied_ids_in_rows`](crate::Projection::applied_ids_in_rows)).
//!
//! A row keeps every id applied to it up to [`APPLIED_IDS_MAX`], then the largest
//! [`APPLIED_IDS_MAX`]. The set does not depend on the order the events arrived in, so a row
//! holds the same ids whatever the delivery order (its bytes may list them in another order).
//!
//! # What the bound guarantees
//!
//! - The same Kafka record delivered again is never re-applied: positions fence it.
//! - The same event re-produced at another offset (a producer retry, a replay) is skipped if its
//!   id is among the row's kept ids: always, for a row changed by at most [`APPLIED_IDS_MAX`]
//!   events (an order has a handful).
//! - Beyond that, a duplicate whose id fell out is applied again. The projection's merge must
//!   be idempotent and order-safe (the replay contract), so the row stays as it was.

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use uuid::Uuid;

/// How many applied event ids a row keeps.
pub const APPLIED_IDS_MAX: usize = 64;

/// The event ids applied to one row, sorted, at most [`APPLIED_IDS_MAX`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedIds(Vec<Uuid>);

impl AppliedIds {
    /// Whether `id` was applied to the row (and is still kept).
    pub fn contains(&self, id: &Uuid) -> bool {
        self.0.binary_search(id).is_ok()
    }

    /// Records `id` as applied; returns `false` if it was already there. When the row holds
    /// more than [`APPLIED_IDS_MAX`] ids, the smallest is dropped.
    pub fn insert(&mut self, id: Uuid) -> bool {
        match self.0.binary_search(&id) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, id);
                if self.0.len() > APPLIED_IDS_MAX {
                    self.0.remove(0);
                }
                true
            }
        }
    }

    /// How many ids are kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no id is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ToSql for AppliedIds {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|id| *id.as_bytes()).collect();
        bytes.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <Vec<u8> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for AppliedIds {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes = <&[u8] as FromSql>::from_sql(ty, raw)?;
        if bytes.len() % 16 != 0 {
            return Err(format!(
                "applied ids: {} bytes is not a whole number of ids",
                bytes.len()
            )
            .into());
        }
        let mut ids: Vec<Uuid> = bytes
            .chunks_exact(16)
            .map(|chunk| Uuid::from_slice(chunk).expect("16 bytes"))
            .collect();
        // appended in SQL or written sorted: sorted here, once
        ids.sort_unstable();
        ids.dedup();
        Ok(AppliedIds(ids))
    }

    fn accepts(ty: &Type) -> bool {
        <&[u8] as FromSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_id_is_applied_once() {
        let mut ids = AppliedIds::default();
        let id = Uuid::new_v4();
        assert!(!ids.contains(&id));
        assert!(ids.insert(id));
        assert!(ids.contains(&id));
        assert!(!ids.insert(id));
        assert_eq!(ids.len(), 1);
    }

    #[test]
    fn the_largest_ids_are_kept() {
        let mut ids = AppliedIds::default();
        for n in 0..(APPLIED_IDS_MAX as u128 + 10) {
            ids.insert(Uuid::from_u128(n));
        }
        assert_eq!(ids.len(), APPLIED_IDS_MAX);
        assert!(!ids.contains(&Uuid::from_u128(9)));
        assert!(ids.contains(&Uuid::from_u128(10)));
        // an id smaller than every kept one is not kept
        assert!(ids.insert(Uuid::from_u128(0)));
        assert!(!ids.contains(&Uuid::from_u128(0)));
    }

    #[test]
    fn a_column_of_the_wrong_length_is_an_error() {
        assert!(AppliedIds::from_sql(&Type::BYTEA, &[0; 17]).is_err());
        let ids = AppliedIds::from_sql(&Type::BYTEA, &[0; 32]).unwrap();
        assert_eq!(ids.len(), 1, "duplicates in the column collapse");
    }

    proptest! {
        /// The kept set depends on which ids were applied, never on their order.
        #[test]
        fn any_order_keeps_the_same_ids(
            mut raw in proptest::collection::vec(any::<u128>(), 0..200),
            seed in any::<u64>(),
        ) {
            let build = |order: &[u128]| {
                let mut ids = AppliedIds::default();
                for n in order {
                    ids.insert(Uuid::from_u128(*n));
                }
                ids
            };
            let first = build(&raw);
            // a deterministic shuffle
            let len = raw.len().max(1);
            for i in 0..raw.len() {
                raw.swap(i, (seed as usize).wrapping_add(i * 7) % len);
            }
            let second = build(&raw);
            prop_assert_eq!(&first, &second);
            let mut buf = BytesMut::new();
            first.to_sql(&Type::BYTEA, &mut buf).unwrap();
            prop_assert_eq!(AppliedIds::from_sql(&Type::BYTEA, &buf).unwrap(), first);
        }
    }
}
