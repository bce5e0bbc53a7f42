//! Durations in the file are whole numbers whose unit is in the key's name
//! (`..._secs`, `..._ms`); inside the program they are `Duration`s, so no
//! use site converts units.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub(super) fn secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}

pub(super) fn millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_millis)
}
