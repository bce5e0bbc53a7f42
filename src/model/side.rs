//! The two copies of the data: each tenant's own database and the landlord.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which copy of the data a change comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Tenant,
    Landlord,
}

impl Side {
    pub fn parse(text: &str) -> Option<Side> {
        match text {
            "tenant" => Some(Side::Tenant),
            "landlord" => Some(Side::Landlord),
            _ => None,
        }
    }

    /// The other copy.
    pub fn opposite(self) -> Side {
        match self {
            Side::Tenant => Side::Landlord,
            Side::Landlord => Side::Tenant,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Tenant => "tenant",
            Side::Landlord => "landlord",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
