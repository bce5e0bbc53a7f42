//! Names that are easy to mix up when they are all strings.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A tenant's stable id from the registry (text of whatever type the
/// registry uses); also the Kafka key of its changes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub fn new(id: impl Into<String>) -> Self {
        TenantId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An id reads as text wherever text is wanted (SQL parameters, labels);
/// text does not become an id without saying so.
impl std::ops::Deref for TenantId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by id can be read with a `&str`.
impl Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for TenantId {
    fn from(id: &str) -> Self {
        TenantId(id.to_string())
    }
}

impl From<String> for TenantId {
    fn from(id: String) -> Self {
        TenantId(id)
    }
}

/// A replication slot's name (cluster-wide, `[a-z0-9_]`, at most 63 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotName(String);

impl SlotName {
    /// Only `source::slot_name` makes these, which keeps them valid.
    pub(crate) fn new_unchecked(name: String) -> Self {
        SlotName(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
