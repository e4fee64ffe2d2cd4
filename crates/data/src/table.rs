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
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(Recent::new(reader));
        let headers = read_headers(&mut rdr, source_name)?;
        let mut table = Self {
            source_name: source_name.to_string(),
            columns: vec![TextColumn::default(); headers.len()],
            headers,
            lines: Vec::new(),
        };
        table.read_rows(&mut rdr, 0)?;
        table.check_not_empty()
    }

    /// [`Table::from_reader`] over bytes already in memory, parsed on every core when
    /// there are enough of them: the rows are cut into one stretch per thread at line
    /// ends outside quotes, each parsed apart, and the columns joined in order. The
    /// table, and any error, are the same as [`Table::from_reader`]'s.
    pub fn from_bytes(bytes: &[u8], source_name: &str) -> Result<Self, DataError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        // Below this many bytes a stretch, a thread costs more than it saves.
        Self::from_bytes_in(bytes, source_name, threads, 256 * 1024)
    }

    /// [`Table::from_bytes`] with at most `threads` stretches of at least `min_stretch`
    /// bytes.
    fn from_bytes_in(
        bytes: &[u8],
        source_name: &str,
        threads: usize,
        min_stretch: usize,
    ) -> Result<Self, DataError> {
        let threads = threads.min(bytes.len() / min_stretch.max(1)).max(1);
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(Recent::new(bytes));
        let headers = read_headers(&mut rdr, source_name)?;
        let body = rdr.position().byte() as usize;
        let cuts = match (threads > 1).then(|| cuts(bytes, body, threads)).flatten() {
            Some(cuts) => cuts,
            None => {
                let mut table = Self {
                    source_name: source_name.to_string(),
                    columns: vec![TextColumn::default(); headers.len()],
                    headers,
                    lines: Vec::new(),
                };
                table.read_rows(&mut rdr, 0)?;
                return table.check_not_empty();
            }
        };
        let blank = || Self {
            source_name: source_name.to_string(),
            columns: vec![TextColumn::default(); headers.len()],
            headers: headers.clone(),
            lines: Vec::new(),
        };
        let parts: Vec<Result<Self, DataError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = cuts
                .windows(2)
                .map(|w| {
                    let (from, to) = (w[0], w[1]);
                    let mut part = blank();
                    scope.spawn(move || {
                        // The file's line of this stretch's first byte, less one: the
                        // reader counts its own lines from 1.
                        let before = bytes[..from].iter().filter(|&&b| b == b'\n').count();
                        let mut rdr = csv::ReaderBuilder::new()
                            .flexible(true)
                            .has_headers(false)
                            .from_reader(Recent::new(&bytes[from..to]));
                        part.read_rows(&mut rdr, before as u64).map(|()| part)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        let mut table = blank();
        for part in parts {
            table.append(part?)?;
        }
        table.check_not_empty()
    }

    /// Reads every record left in `rdr` into the columns; `line_offset` is added to
    /// the reader's own line numbers.
    fn read_rows<R: Read>(
        &mut self,
        rdr: &mut csv::Reader<Recent<R>>,
        line_offset: u64,
    ) -> Result<(), DataError> {
        let source_name = self.source_name.as_str();
        let csv_err = |source: csv::Error| DataError::Csv {
            source_name: source_name.to_string(),
            line: source.position().map(|p| p.line() + line_offset),
            source,
        };
        let n_cols = self.headers.len();
        let mut record = csv::StringRecord::new();
        while rdr.read_record(&mut record).map_err(csv_err)? {
            let line = start_line(rdr, &record) + line_offset;
            if record.len() != n_cols {
                // A trailing blank line is not a row.
                if record.len() == 1 && record[0].trim().is_empty() {
                    continue;
                }
                return Err(DataError::Ragged {
                    source_name: source_name.to_string(),
                    line,
                    expected: n_cols,
                    found: record.len(),
                });
            }
            for (col, cell) in self.columns.iter_mut().zip(record.iter()) {
                col.buf.push_str(cell);
                col.ends.push(text_end(&col.buf, source_name)?);
            }
            self.lines.push(line);
        }
        Ok(())
    }

    /// Appends the rows of `other`, which has the same header.
    fn append(&mut self, other: Self) -> Result<(), DataError> {
        for (col, more) in self.columns.iter_mut().zip(other.columns) {
            let base = col.buf.len();
            col.buf.push_str(&more.buf);
            text_end(&col.buf, &self.source_name)?;
            col.ends
                .extend(more.ends.iter().map(|&e| (base + e as usize) as u32));
        }
        self.lines.extend(other.lines);
        Ok(())
    }

    fn check_not_empty(self) -> Result<Self, DataError> {
        if self.lines.is_empty() {
            return Err(DataError::Empty {
                source_name: self.source_name,
            });
        }
        Ok(self)
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

/// The header row, trimmed; an error if it is empty or names a column twice.
fn read_headers<R: Read>(
    rdr: &mut csv::Reader<Recent<R>>,
    source_name: &str,
) -> Result<Vec<String>, DataError> {
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|source| DataError::Csv {
            source_name: source_name.to_string(),
            line: source.position().map(|p| p.line()),
            source,
        })?
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
    Ok(headers)
}

/// A column's text length as a cell's end offset.
fn text_end(buf: &str, source_name: &str) -> Result<u32, DataError> {
    u32::try_from(buf.len()).map_err(|_| DataError::Invalid {
        source_name: source_name.to_string(),
        reason: "a column holds more than 4 GiB of text".into(),
    })
}

/// Where to cut `bytes[body..]` into about `parts` stretches of whole records: the
/// offsets, from `body` to the end. A cut is just after a newline outside quotes.
///
/// Whether a newline is inside quotes follows from the quotes before it, but only if
/// every quote is where RFC 4180 puts them: opening a field, closing it (before a
/// delimiter, a line end or the end), or doubled inside it. The CSV reader also takes
/// a stray quote inside an unquoted field as text; such a file is not cut (`None`),
/// and is read on one thread.
fn cuts(bytes: &[u8], body: usize, parts: usize) -> Option<Vec<usize>> {
    let len = bytes.len();
    let mut targets = (1..parts).map(|k| body + (len - body) * k / parts);
    // The next cut is the first newline outside quotes at or after `want`.
    let mut want = targets.next();
    let mut cuts = vec![body];
    let mut quoted = false;
    let mut i = body;
    // Walks quote to quote; between two quotes the state is known.
    loop {
        let next_quote = bytes[i..].iter().position(|&b| b == b'"').map(|p| i + p);
        let stop = next_quote.unwrap_or(len);
        while let Some(t) = want.filter(|&t| !quoted && t < stop) {
            let from = t.max(i);
            let Some(p) = bytes[from..stop].iter().position(|&b| b == b'\n') else {
                break;
            };
            let cut = from + p + 1;
            cuts.push(cut);
            want = targets.by_ref().find(|&t| t >= cut);
        }
        let Some(q) = next_quote else { break };
        if quoted {
            if bytes.get(q + 1) == Some(&b'"') {
                i = q + 2;
                continue;
            }
            if !matches!(bytes.get(q + 1), None | Some(b',' | b'\n' | b'\r')) {
                return None;
            }
            quoted = false;
        } else {
            if q > 0 && !matches!(bytes[q - 1], b',' | b'\n' | b'\r') {
                return None;
            }
            quoted = true;
        }
        i = q + 1;
    }
    cuts.retain(|&c| c < len);
    cuts.push(len);
    (cuts.len() > 2).then_some(cuts)
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

    /// Every cell and line of two tables, for comparing them.
    fn contents(t: &Table) -> (Vec<String>, Vec<Vec<String>>, Vec<u64>) {
        let rows = (0..t.n_rows())
            .map(|r| {
                (0..t.headers().len())
                    .map(|c| t.cell(r, c).to_string())
                    .collect()
            })
            .collect();
        (
            t.headers().to_vec(),
            rows,
            (0..t.n_rows()).map(|r| t.line(r)).collect(),
        )
    }

    /// The parallel reader gives the sequential reader's table, or its error, for any
    /// number of stretches: quoted commas and newlines, doubled quotes, CRLF, blank
    /// lines, a missing final newline, ragged rows, and stray quotes (read on one
    /// thread).
    #[test]
    fn parallel_reads_are_sequential_reads() {
        let mut big = String::from("id,note,amount\r\n");
        for r in 0..500 {
            match r % 9 {
                0 => big.push_str(&format!("{r},\"two\nlines\",\"£1,{r}.50 \"\n")),
                1 => big.push_str(&format!("{r},\"say \"\"hi\"\"\",{r}\r\n")),
                2 => big.push('\n'),
                3 => big.push_str(&format!("{r},,\n")),
                _ => big.push_str(&format!("{r},plain,{}\n", r * 7)),
            }
        }
        let cases = [
            big.clone(),
            big.trim_end().to_string(),
            format!("{big}1,2\n3,4,5\n"),
            format!("{big}7,a\"b,9\n8,\"x\ny\",1\n"),
            format!("{big}7,\"unclosed,9\n8,x,1\n"),
            "a,b\n1,2\n".to_string(),
            "a,b\n".to_string(),
        ];
        let found = cuts(big.as_bytes(), 16, 4);
        assert!(found.as_ref().is_some_and(|c| c.len() == 5), "{found:?}");
        for csv in &cases {
            let expected = Table::from_reader(csv.as_bytes(), "t.csv");
            for threads in [1, 2, 3, 4, 7] {
                let got = Table::from_bytes_in(csv.as_bytes(), "t.csv", threads, 1);
                match (&expected, &got) {
                    (Ok(a), Ok(b)) => assert_eq!(contents(a), contents(b), "{threads} threads"),
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => panic!("{threads} threads: {:?} vs {:?}", a.is_ok(), b.is_ok()),
                }
            }
        }
    }

    /// Cuts fall just after line ends outside quotes, and a stray quote in an unquoted
    /// field means no cuts at all.
    #[test]
    fn cuts_are_at_line_ends_outside_quotes() {
        let csv = b"h\n\"a\nb\"\nc\nd\n";
        let found = cuts(csv, 2, 3).expect("cuts");
        assert_eq!(found.first(), Some(&2));
        assert_eq!(found.last(), Some(&csv.len()));
        for &c in &found[1..found.len() - 1] {
            assert_eq!(csv[c - 1], b'\n');
            assert!(c != 5, "inside the quoted field");
        }
        assert_eq!(cuts(b"h\nx\"y\nc\nd\n", 2, 3), None);
    }
}
