//! Capture files: raw ring-buffer records, one lowercase hex line each.
//! Lines starting with `#` are comments. Text, so fixtures diff and review
//! like code.

use std::io::{BufRead, BufReader, Write};

use anyhow::{Context, Result, bail};

pub fn write_record(out: &mut impl Write, record: &[u8]) -> std::io::Result<()> {
    let mut line = String::with_capacity(record.len() * 2 + 1);
    for b in record {
        line.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        line.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// Reads every record of a capture file.
pub fn read_records(input: impl BufRead) -> Result<Vec<Vec<u8>>> {
    let mut records = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        match sshlogin_common::capture::parse_line(&line) {
            Ok(Some(bytes)) => records.push(bytes),
            Ok(None) => {}
            Err(e) => bail!("line {}: {e}", n + 1),
        }
    }
    Ok(records)
}

/// A capture recorded from a real sshd run (tests/fixtures/captures, made by
/// record.sh there), for the tests and benchmarks. Panics, naming the file,
/// when it cannot be read: a missing fixture is a broken checkout.
#[doc(hidden)]
pub fn fixture(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/fixtures/captures/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let read = std::fs::File::open(&path).map_err(anyhow::Error::from).and_then(|f| read_records(BufReader::new(f)));
    read.unwrap_or_else(|e| panic!("{path}: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        write_record(&mut out, &[0, 1, 0xab, 0xff]).unwrap();
        write_record(&mut out, &[]).unwrap();
        let text = format!("# comment\n{}", String::from_utf8(out).unwrap());
        assert_eq!(read_records(text.as_bytes()).unwrap(), vec![vec![0, 1, 0xab, 0xff]]);
        assert!(read_records("abc\n".as_bytes()).is_err());
        assert!(read_records("zz\n".as_bytes()).is_err());
    }
}
