//! Where an archived object lives in the bucket: `{prefix}{topic}/{partition}/{first offset}.avro`,
//! the offset zero-padded to 20 digits so that a listing in key order is offset order.
//!
//! An object is named by its first offset only, and written put-if-absent: whoever writes the
//! object starting at an offset first defines it, so a crashed writer's retry, or a second
//! archiver, can never leave two objects covering the same record.

/// The key of the object of `topic`'s `partition` starting at `first_offset`.
pub fn object_key(prefix: &str, topic: &str, partition: i32, first_offset: i64) -> String {
    format!("{prefix}{topic}/{partition}/{first_offset:020}.avro")
}

/// The folder holding every object of `topic`'s `partition` (a prefix for listing).
pub fn partition_folder(prefix: &str, topic: &str, partition: i32) -> String {
    format!("{prefix}{topic}/{partition}/")
}

/// The topic, partition and first offset named by `key`, when `key` is an object's key under
/// `prefix`.
pub fn parse_object_key(prefix: &str, key: &str) -> Option<(String, i32, i64)> {
    let rest = key.strip_prefix(prefix)?.strip_suffix(".avro")?;
    let mut parts = rest.rsplitn(3, '/');
    let offset = parts.next()?;
    let partition = parts.next()?;
    let topic = parts.next()?;
    if offset.len() != 20 || topic.is_empty() {
        return None;
    }
    Some((
        topic.to_owned(),
        partition.parse().ok()?,
        offset.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_offset_order_and_parse_back() {
        let a = object_key("archive/", "shop.orders", 2, 9);
        let b = object_key("archive/", "shop.orders", 2, 10);
        assert_eq!(a, "archive/shop.orders/2/00000000000000000009.avro");
        assert!(a < b);
        assert_eq!(
            parse_object_key("archive/", &b),
            Some(("shop.orders".into(), 2, 10))
        );
        assert!(a.starts_with(&partition_folder("archive/", "shop.orders", 2)));
    }

    #[test]
    fn other_keys_are_not_objects() {
        for key in [
            "archive/x/1/12.avro",
            "other/x/1/00000000000000000012.avro",
            "archive/1/00000000000000000012.avro",
            "archive/x/y/00000000000000000012.avro",
            "archive/x/1/00000000000000000012.json",
        ] {
            assert_eq!(parse_object_key("archive/", key), None, "{key}");
        }
    }
}
