//! `batch_size = 64` or `batch_size = "full"`.
use serde::{Deserialize, Deserializer, Serializer};
use strata_data::BatchSize;

pub fn serialize<S: Serializer>(b: &BatchSize, s: S) -> Result<S::Ok, S::Error> {
    match b {
        BatchSize::Samples(n) => s.serialize_u64(*n as u64),
        BatchSize::Full => s.serialize_str("full"),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BatchSize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(i64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) if n > 0 => Ok(BatchSize::Samples(n as usize)),
        Raw::N(n) => Err(serde::de::Error::custom(format!("batch_size must be at least 1, got {n}"))),
        Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}
