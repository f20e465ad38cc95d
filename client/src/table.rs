//! Aligned text columns, for every table shieldctl prints.

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// Columns separated by two spaces, each as wide as its widest cell; no trailing spaces.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns
                .iter()
                .map(|(name, align)| ((*name).to_owned(), *align))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .take(self.columns.len())
            .map(|cell| sanitize(&cell.into()))
            .collect();
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    /// The table with its header line, every line ending in a newline.
    pub fn render(&self) -> String {
        let header: Vec<String> = self.columns.iter().map(|(name, _)| name.clone()).collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|column| {
                std::iter::once(&header)
                    .chain(&self.rows)
                    .filter_map(|row| row.get(column))
                    .map(|cell| width(cell))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                let target = widths.get(column).copied().unwrap_or(0);
                let pad = " ".repeat(target.saturating_sub(width(cell)));
                if column > 0 {
                    line.push_str("  ");
                }
                match self.columns.get(column).map(|(_, align)| *align) {
                    Some(Align::Right) => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                    _ => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// `key  value` lines with the values aligned (for single objects such as `status`).
pub fn pairs(pairs: &[(&str, String)]) -> String {
    let key_width = pairs.iter().map(|(key, _)| width(key)).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| {
            let pad = " ".repeat(key_width.saturating_sub(width(key)));
            format!("{key}{pad}  {}\n", sanitize(value))
                .trim_end()
                .to_owned()
                + "\n"
        })
        .collect()
}

/// The width of `cell` on a terminal, counted in characters.
pub fn width(cell: &str) -> usize {
    cell.chars().count()
}

/// Daemon-provided text must not break the layout (or the terminal): no control characters.
pub fn sanitize(cell: &str) -> String {
    cell.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut table = Table::new(&[
            ("ID", Align::Left),
            ("NAME", Align::Left),
            ("COUNT", Align::Right),
        ]);
        table.row(["0123456789ab", "web", "3"]);
        table.row(["fedcba987654", "database-1", "120"]);
        assert_eq!(
            table.render(),
            "ID            NAME        COUNT\n\
             0123456789ab  web             3\n\
             fedcba987654  database-1    120\n"
        );
    }

    #[test]
    fn no_trailing_spaces_and_short_rows_are_padded() {
        let mut table = Table::new(&[("A", Align::Left), ("LONG HEADER", Align::Left)]);
        table.row(["x"]);
        table.row(["y", "", "dropped"]);
        let text = table.render();
        assert_eq!(text, "A  LONG HEADER\nx\ny\n");
    }

    #[test]
    fn empty_table_is_its_header() {
        let table = Table::new(&[("NAME", Align::Left), ("SOURCE", Align::Left)]);
        assert_eq!(table.render(), "NAME  SOURCE\n");
    }

    #[test]
    fn control_characters_do_not_break_lines() {
        let mut table = Table::new(&[("NAME", Align::Left)]);
        table.row(["evil\nname\x1b[31m"]);
        assert_eq!(table.render().lines().count(), 2);
    }

    #[test]
    fn unicode_counts_characters() {
        let mut table = Table::new(&[("N", Align::Left), ("X", Align::Left)]);
        table.row(["héhé", "1"]);
        table.row(["ab", "2"]);
        assert_eq!(table.render(), "N     X\nhéhé  1\nab    2\n");
    }

    #[test]
    fn pairs_align_values() {
        assert_eq!(
            pairs(&[
                ("socket", "/s".to_owned()),
                ("containers", "1 running".to_owned())
            ]),
            "socket      /s\ncontainers  1 running\n"
        );
    }
}
