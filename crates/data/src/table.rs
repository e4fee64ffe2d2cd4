use std::io::Read;
use std::path::Path;

use crate::DataError;

/// A CSV file held column by column as text. Each column keeps one string buffer and
/// the end offset of every cell, so a million-row file costs two allocations a column
/// instead of one per cell.
#[derive(Debug, Clone)]
pub struct Table {
    source_name: String,
    headers: Vec<String>,
    columns: Vec<TextColumn>,
    /// The 1-based line on which each data row starts, for error messages.
    lines: Vec<u64>,
}

#[derive(Debug, Clone, Default)]
struct TextColumn {
    buf: String,
    ends: Vec<u32>,
}

impl TextColumn {
    fn get(&self, row: usize) -> &str {
        let start = if row == 0 {
            0
        } else {
            self.ends[row - 1] as usize
        };
        &self.buf[start..self.ends[row] as usize]
    }
}

impl Table {
    pub fn from_path(path: &Path) -> Result<Self, DataError> {
        let file = std::fs::File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_reader(
            std::io::BufReader::with_capacity(1 << 20, file),
            &path.display().to_string(),
        )
    }

    /// Reads CSV with a header row. `source_name` is used in every error message.
    pub fn from_reader(reader: impl Read, source_name: &str) -> Result<Self, DataError> {
        let csv_err = |source: csv::Error| DataError::Csv {
            source_name: source_name.to_string(),
            line: source.position().map(|p| p.line()),
            source,
        };
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let headers: Vec<String> = rdr
            .headers()
            .map_err(csv_err)?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        if headers.is_empty() || headers.iter().all(String::is_empty) {
            return Err(DataError::Empty {
                source_name: source_name.to_string(),
            });
        }
        for (i, h) in headers.iter().enumerate() {
            if headers[..i].contains(h) {
                return Err(DataError::DuplicateColumn {
                    source_name: source_name.to_string(),
                    column: h.clone(),
                });
            }
        }
        let mut columns = vec![TextColumn::default(); headers.len()];
        let mut lines = Vec::new();
        let mut record = csv::StringRecord::new();
        while rdr.read_record(&mut record).map_err(csv_err)? {
            let line = record.position().map_or(0, |p| p.line());
            if record.len() != headers.len() {
                // A trailing blank line is not a row.
                if record.len() == 1 && record[0].trim().is_empty() {
                    continue;
                }
                return Err(DataError::Ragged {
                    source_name: source_name.to_string(),
                    line,
                    expected: headers.len(),
                    found: record.len(),
                });
            }
            for (col, cell) in columns.iter_mut().zip(record.iter()) {
                col.buf.push_str(cell);
                let end = u32::try_from(col.buf.len()).map_err(|_| DataError::Invalid {
                    source_name: source_name.to_string(),
                    reason: "a column holds more than 4 GiB of text".into(),
                })?;
                col.ends.push(end);
            }
            lines.push(line);
        }
        if lines.is_empty() {
            return Err(DataError::Empty {
                source_name: source_name.to_string(),
            });
        }
        Ok(Self {
            source_name: source_name.to_string(),
            headers,
            columns,
            lines,
        })
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    pub fn n_rows(&self) -> usize {
        self.lines.len()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// The raw text of one cell.
    pub fn cell(&self, row: usize, col: usize) -> &str {
        self.columns[col].get(row)
    }

    /// The file line a data row came from.
    pub fn line(&self, row: usize) -> u64 {
        self.lines[row]
    }

    /// Iterates over one column's cells.
    pub fn column(&self, col: usize) -> impl ExactSizeIterator<Item = &str> + '_ {
        let c = &self.columns[col];
        (0..self.n_rows()).map(move |r| c.get(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_quoted_currency() {
        let t = Table::from_reader("a,b\n1,\"£1,623.85 \"\n2,\n".as_bytes(), "t.csv").unwrap();
        assert_eq!(t.n_rows(), 2);
        assert_eq!(t.cell(0, 1), "£1,623.85 ");
        assert_eq!(t.cell(1, 1), "");
        assert_eq!(t.line(1), 3);
    }

    #[test]
    fn ragged_row_names_line() {
        let err = Table::from_reader("a,b\n1,2\n3\n".as_bytes(), "t.csv")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "t.csv line 3: expected 2 fields as in the header, found 1"
        );
    }

    #[test]
    fn empty_file_is_an_error() {
        let err = Table::from_reader("".as_bytes(), "e.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("e.csv is empty"), "{err}");
        let err = Table::from_reader("a,b\n".as_bytes(), "h.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("h.csv is empty"), "{err}");
    }

    #[test]
    fn duplicate_header() {
        let err = Table::from_reader("a,a\n1,2\n".as_bytes(), "d.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate column `a`"), "{err}");
    }
}
