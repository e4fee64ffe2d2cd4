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
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(Recent::new(reader));
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
            let line = start_line(&rdr, &record);
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

/// The file line on which `record`, just read, starts, counting the header as line 1.
/// The reader counts the newlines it has consumed: those inside the record's quoted
/// fields, and its terminator when that was a lone `\n` (a CRLF's `\n`, and the end of
/// input, are not consumed with the record). The record's own position would name the
/// first of any blank lines before it instead.
fn start_line<R: Read>(rdr: &csv::Reader<Recent<R>>, record: &csv::StringRecord) -> u64 {
    let inside: u64 = record
        .iter()
        .map(|field| field.bytes().filter(|&b| b == b'\n').count() as u64)
        .sum();
    let end = rdr.position().byte();
    // Unknown only if the reader were to read ahead past the record's chunk; a
    // newline is then the likeliest terminator.
    let last = end
        .checked_sub(1)
        .map_or(Some(b'\n'), |at| rdr.get_ref().byte_at(at).or(Some(b'\n')));
    let terminator = u64::from(end > 0 && last == Some(b'\n'));
    rdr.position()
        .line()
        .saturating_sub(inside + terminator)
        .max(1)
}

/// A reader that keeps a copy of the last chunk it gave out. The CSV reader parses
/// records out of that chunk (it refills its buffer only once the buffer is used up),
/// so the last byte of a record just read is in it.
struct Recent<R> {
    inner: R,
    chunk: Vec<u8>,
    /// The input offset of `chunk[0]`.
    chunk_start: u64,
}

impl<R> Recent<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            chunk: Vec::new(),
            chunk_start: 0,
        }
    }

    /// The input's byte at `offset`, if it is in the last chunk read.
    fn byte_at(&self, offset: u64) -> Option<u8> {
        let i = usize::try_from(offset.checked_sub(self.chunk_start)?).ok()?;
        self.chunk.get(i).copied()
    }
}

impl<R: Read> Read for Recent<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.chunk_start += self.chunk.len() as u64;
            self.chunk.clear();
            self.chunk.extend_from_slice(&buf[..n]);
        }
        Ok(n)
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

    /// Lines are the file's, counting the header as line 1: not data rows, and not
    /// thrown off by blank lines, quoted newlines, CRLF or a missing final newline.
    #[test]
    fn rows_know_their_file_lines() {
        let cases: [(&str, &[u64]); 6] = [
            ("a,b\n1,2\n3,4\n", &[2, 3]),
            ("a,b\n1,2\n3,4", &[2, 3]),
            ("a,b\n\n\n1,2\n\n3,4\n\n", &[4, 6]),
            ("a,b\n\n1,2\n\n3,4", &[3, 5]),
            ("a,b\r\n1,\"x\r\ny\"\r\n3,4\r\n", &[2, 4]),
            ("a,b\n1,\"two\nline\nfield\"\n\n5,6", &[2, 6]),
        ];
        for (csv, expected) in cases {
            let t = Table::from_reader(csv.as_bytes(), "t.csv").unwrap();
            let lines: Vec<u64> = (0..t.n_rows()).map(|r| t.line(r)).collect();
            assert_eq!(lines, expected, "{csv:?}");
        }
    }

    /// Lines stay right across the reader's buffer refills (8 KiB): a long file with
    /// every kind of line ending, blank lines and quoted newlines.
    #[test]
    fn lines_stay_right_across_buffer_refills() {
        let mut csv = String::from("a,b\n");
        let (mut line, mut expected) = (2u64, Vec::new());
        for r in 0..3000u64 {
            let ending = if r % 3 == 0 { "\r\n" } else { "\n" };
            if r % 7 == 0 {
                csv.push_str(ending);
                line += 1;
            }
            expected.push(line);
            if r % 11 == 0 {
                csv.push_str(&format!("{r},\"x\ny\"{ending}"));
                line += 2;
            } else {
                csv.push_str(&format!("{r},{}{ending}", r * 31));
                line += 1;
            }
        }
        let t = Table::from_reader(csv.as_bytes(), "t.csv").unwrap();
        let lines: Vec<u64> = (0..t.n_rows()).map(|r| t.line(r)).collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn ragged_rows_after_blank_lines_name_their_own_line() {
        for (csv, line) in [
            ("a,b\n1,2\n\n\n3\n4,5\n", 5),
            ("a,b\n1,2\n\n3", 4),
            ("a,b\n1,\"x\ny\"\n3\n", 4),
        ] {
            let err = Table::from_reader(csv.as_bytes(), "t.csv")
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!("t.csv line {line}: expected 2 fields as in the header, found 1"),
                "{csv:?}"
            );
        }
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
