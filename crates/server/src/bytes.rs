//! 256-entry byte tables for the hand-written scanners of the SkyPilot door
//! (a table lookup beats several comparisons per byte).

/// A table marking the control characters (below 0x20) when `controls`,
/// and every byte in `extra`.
#[expect(
    clippy::indexing_slicing,
    reason = "indices below 256 into a 256-entry table, checked at compile time"
)]
pub(crate) const fn table(controls: bool, extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while controls && b < 0x20 {
        table[b] = true;
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

/// Whether `table` marks `b`.
#[expect(
    clippy::indexing_slicing,
    reason = "a u8 always indexes a 256-entry table"
)]
pub(crate) fn marks(table: &[bool; 256], b: u8) -> bool {
    table[usize::from(b)]
}
