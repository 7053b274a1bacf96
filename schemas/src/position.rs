//! Position tokens: an opaque, URL-safe encoding of (topic, partition, offset) that the write side
//! returns and the read API accepts to wait until a projection has reached that write.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Why a string is not a position token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    /// Not base64url, not UTF-8, or not the token's shape.
    #[error("malformed position token")]
    Malformed,
    /// A token of a version this build does not know.
    #[error("unsupported position token version {0}")]
    UnsupportedVersion(String),
    /// The shape is right but a part is out of range.
    #[error("invalid position token: {0}")]
    Invalid(&'static str),
}

/// A record's place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The topic.
    pub topic: String,
    /// The partition (>= 0).
    pub partition: i32,
    /// The offset (>= 0).
    pub offset: i64,
}

const VERSION: &str = "p1";
/// Kafka limits topic names to 249 characters.
const MAX_TOPIC_LEN: usize = 249;

fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Position {
    /// An opaque, URL-safe token for this position.
    pub fn to_token(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{VERSION}:{}:{}:{}",
            self.partition, self.offset, self.topic
        ))
    }

    /// Reads a token made by [`Position::to_token`]; anything else is an error.
    pub fn from_token(s: &str) -> Result<Position, PositionError> {
        if s.len() > 512 {
            return Err(PositionError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| PositionError::Malformed)?;
        let text = String::from_utf8(bytes).map_err(|_| PositionError::Malformed)?;
        let mut parts = text.splitn(4, ':');
        let (Some(version), Some(partition), Some(offset), Some(topic)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PositionError::Malformed);
        };
        if version != VERSION {
            return Err(PositionError::UnsupportedVersion(
                version.chars().take(16).collect(),
            ));
        }
        let partition: i32 = partition.parse().map_err(|_| PositionError::Malformed)?;
        let offset: i64 = offset.parse().map_err(|_| PositionError::Malformed)?;
        if partition < 0 {
            return Err(PositionError::Invalid("negative partition"));
        }
        if offset < 0 {
            return Err(PositionError::Invalid("negative offset"));
        }
        if !valid_topic(topic) {
            return Err(PositionError::Invalid("not a valid topic name"));
        }
        Ok(Position {
            topic: topic.to_string(),
            partition,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let p = Position {
            topic: "orders".into(),
            partition: 3,
            offset: 17,
        };
        let token = p.to_token();
        assert!(token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(Position::from_token(&token), Ok(p));
    }

    #[test]
    fn garbage_is_rejected() {
        for garbage in ["", "!!!", "abc", "cDE6MzoxNw", &"A".repeat(1000)] {
            assert!(Position::from_token(garbage).is_err(), "{garbage}");
        }
        let forge = |s: &str| URL_SAFE_NO_PAD.encode(s);
        assert_eq!(
            Position::from_token(&forge("p1:-1:0:orders")),
            Err(PositionError::Invalid("negative partition"))
        );
        assert_eq!(
            Position::from_token(&forge("p1:0:-5:orders")),
            Err(PositionError::Invalid("negative offset"))
        );
        assert_eq!(
            Position::from_token(&forge("p1:0:5:or ders")),
            Err(PositionError::Invalid("not a valid topic name"))
        );
        assert_eq!(
            Position::from_token(&forge("p9:0:5:orders")),
            Err(PositionError::UnsupportedVersion("p9".into()))
        );
        assert_eq!(
            Position::from_token(&forge("p1:x:5:orders")),
            Err(PositionError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn any_position_round_trips(topic in "[a-zA-Z0-9._-]{1,60}", partition in 0i32.., offset in 0i64..) {
            let p = Position { topic, partition, offset };
            prop_assert_eq!(Position::from_token(&p.to_token()), Ok(p));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,80}") {
            let _ = Position::from_token(&s);
        }
    }
}
