//! The production conflict rule (`model::conflict`) as the tests' oracle:
//! of the application writes that took effect on a row, the one both sides
//! must end with.

use cdc_bridge::model::conflict::{decide, Decision, TargetState, Version};
use cdc_bridge::model::Side;

/// `cdc_version` in microseconds, as the tests read it back (`RETURNING`).
pub(crate) const VERSION_MICROS: &str = "(extract(epoch from cdc_version) * 1000000)::bigint";

/// One application write that took effect: its version and the colour it
/// left (`None` for a delete).
#[derive(Clone, Debug)]
pub(crate) struct Write {
    pub(crate) version: Version,
    pub(crate) color: Option<String>,
}

impl Write {
    pub(crate) fn new(micros: i64, side: Side, color: Option<String>) -> Write {
        Write {
            version: Version { micros, side },
            color,
        }
    }

    /// What a target holds after this write, as the conflict rule sees it.
    fn as_target(&self) -> TargetState {
        match self.color {
            Some(_) => TargetState::Row(self.version),
            None => TargetState::Tombstone(self.version),
        }
    }

    /// The row both sides end with after this write, as (colour, version
    /// µs, side); `None` after a delete.
    pub(crate) fn expected_row(&self) -> Option<(Option<String>, i64, String)> {
        self.color.as_ref().map(|color| {
            (
                Some(color.clone()),
                self.version.micros,
                self.version.side.as_str().to_string(),
            )
        })
    }
}

/// Keeps in `newest` whichever of it and `write` the conflict rule lets win.
pub(crate) fn keep_newest(newest: &mut Option<Write>, write: Write) {
    let wins = match newest {
        Some(best) => decide(write.version, best.as_target()) == Decision::Apply,
        None => true,
    };
    if wins {
        *newest = Some(write);
    }
}
