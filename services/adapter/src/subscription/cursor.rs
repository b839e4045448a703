//! Cursors: where a delivered record sits, as the subscriber hands it back.

use std::{fmt, str::FromStr};

/// Where a delivered record sits: `<topic>:<partition>:<offset>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.topic, self.partition, self.offset)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("{0:?} is not a cursor (topic:partition:offset, as delivered)")]
    Malformed(String),
    #[error("{reason}")]
    NotDelivered { index: usize, reason: String },
    #[error("commit failed: {0}")]
    Commit(String),
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || CursorError::Malformed(s.chars().take(200).collect());
        let mut parts = s.rsplitn(3, ':');
        let offset = parts.next().and_then(|o| o.parse::<i64>().ok());
        let partition = parts.next().and_then(|p| p.parse::<i32>().ok());
        let topic = parts.next().filter(|t| !t.is_empty());
        match (topic, partition, offset) {
            (Some(topic), Some(partition), Some(offset)) if partition >= 0 && offset >= 0 => {
                Ok(Self {
                    topic: topic.to_string(),
                    partition,
                    offset,
                })
            }
            _ => Err(malformed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            topic: "govbus.records.marriage_certificate".into(),
            partition: 2,
            offset: 41,
        };
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        for bad in [
            "", "x", "t:1", "t:-1:4", "t:1:-4", ":1:2", "t:a:2", "t:1:2x",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} parsed");
        }
    }
}
