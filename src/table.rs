//! Plain-text tables for the CLI: every column as wide as its widest cell
//! (in terminal columns), text to the left, numbers to the right, and cells
//! that cannot break the layout (control characters are escaped).

use unicode_width::UnicodeWidthStr as _;
use warden_core::Usd;

/// How a column's cells are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table: a header row and data rows, printed with [`Table::lines`].
#[derive(Debug, Default)]
pub struct Table {
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            aligns: columns.iter().map(|(_, a)| *a).collect(),
            rows: vec![columns.iter().map(|(h, _)| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row; each cell is made safe to print on one line.
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows
            .push(cells.into_iter().map(|c| one_line(&c)).collect());
    }

    /// The table's lines, header first, columns separated by two spaces and
    /// trailing spaces trimmed.
    pub fn lines(&self) -> Vec<String> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.width())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        self.rows
            .iter()
            .map(|row| {
                let mut line = String::new();
                for (c, (cell, width)) in row.iter().zip(&widths).enumerate() {
                    if c > 0 {
                        line.push_str("  ");
                    }
                    let pad = " ".repeat(width.saturating_sub(cell.width()));
                    match self.aligns.get(c).copied().unwrap_or(Align::Left) {
                        Align::Left => {
                            line.push_str(cell);
                            line.push_str(&pad);
                        }
                        Align::Right => {
                            line.push_str(&pad);
                            line.push_str(cell);
                        }
                    }
                }
                line.trim_end().to_owned()
            })
            .collect()
    }
}

/// The number of decimals a column of these amounts needs so that every
/// one is exact and all line up (at least 2).
pub fn money_decimals(amounts: impl IntoIterator<Item = Usd>) -> usize {
    amounts.into_iter().map(Usd::decimals).max().unwrap_or(2)
}

/// A cell on one line: control characters (a newline or tab in a user's
/// cluster name, a terminal escape) are shown escaped, never obeyed.
pub fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_however_long_or_wide_the_cells() {
        let mut t = Table::new(&[("name", Align::Left), ("gpus", Align::Right)]);
        t.row([
            "a-very-long-cluster-name-of-forty-chars".to_owned(),
            "8".into(),
        ]);
        t.row(["模型".to_owned(), "16".into()]);
        t.row(["x\ny\u{1b}[2J".to_owned(), "1".into()]);
        let lines = t.lines();
        // Every "gpus" cell ends in the same terminal column.
        let ends: Vec<usize> = lines.iter().map(|l| l.width()).collect();
        assert!(ends.iter().all(|&e| e == ends[0]), "{lines:#?}");
        assert!(lines[3].starts_with("x\\ny\\u{1b}[2J "), "{}", lines[3]);
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn money_columns_share_decimals() {
        let amounts = [Usd::from_micros(1_234_567), Usd::from_micros(4_000_000)];
        let d = money_decimals(amounts);
        assert_eq!(
            amounts.map(|a| a.with_decimals(d)),
            ["$1.234567", "$4.000000"]
        );
        assert_eq!(money_decimals([]), 2);
    }
}
