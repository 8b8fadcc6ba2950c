//! Container logs in the CRI format kubelet and `kubectl logs` read:
//! `<RFC3339Nano> stdout|stderr F|P <line>`, `F` for a full line and `P` for a piece of a
//! line longer than the buffer (kubernetes/cri-api `LogTag`), rotated by size as kubelet's
//! `containerLogMaxSize` / `containerLogMaxFiles` do.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A line longer than this is written in `P` pieces (containerd uses 16 KiB too).
const MAX_LINE: usize = 16 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A log file: readable by root and its group only (containerd's 0640).
fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(LOG_FILE_MODE).open(path)
}

pub const LOG_FILE_MODE: u32 = 0o640;

pub struct CriLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
    /// Bytes of a line not yet ended, per stream.
    pending: [Vec<u8>; 2],
}

impl CriLog {
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> io::Result<CriLog> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = open_log(path)?;
        let size = file.metadata()?.len();
        Ok(CriLog { path: path.to_path_buf(), file, size, max_size, max_files, pending: [Vec::new(), Vec::new()] })
    }

    /// Takes what a stream produced; writes every completed line.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let i = stream as usize;
        while let Some(newline) = data.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.pending[i]);
            line.extend_from_slice(&data[..newline]);
            self.write_line(stream, &line, true)?;
            data = &data[newline + 1..];
        }
        self.pending[i].extend_from_slice(data);
        while self.pending[i].len() >= MAX_LINE {
            let rest = self.pending[i].split_off(MAX_LINE);
            let piece = std::mem::replace(&mut self.pending[i], rest);
            self.write_line(stream, &piece, false)?;
        }
        Ok(())
    }

    /// The stream ended: what is left is a last, full line.
    pub fn close(&mut self, stream: Stream) -> io::Result<()> {
        let rest = std::mem::take(&mut self.pending[stream as usize]);
        if !rest.is_empty() {
            self.write_line(stream, &rest, true)?;
        }
        Ok(())
    }

    fn write_line(&mut self, stream: Stream, line: &[u8], full: bool) -> io::Result<()> {
        let mut record =
            format!("{} {} {} ", rfc3339_nano(SystemTime::now()), stream.name(), if full { 'F' } else { 'P' })
                .into_bytes();
        record.extend_from_slice(line);
        record.push(b'\n');
        self.file.write_all(&record)?;
        self.size += record.len() as u64;
        if self.size >= self.max_size {
            self.rotate()?;
        }
        Ok(())
    }

    /// `0.log` becomes `0.log.<UTC timestamp>`; the oldest rotated files beyond
    /// `max_files - 1` are deleted.
    fn rotate(&mut self) -> io::Result<()> {
        let stamp = rfc3339_nano(SystemTime::now()).replace([':', '-'], "").replace('T', "-");
        let rotated = PathBuf::from(format!("{}.{}", self.path.display(), stamp.trim_end_matches('Z')));
        fs::rename(&self.path, &rotated)?;
        self.file = open_log(&self.path)?;
        self.size = 0;
        let name = self.path.file_name().expect("log file name").to_string_lossy().into_owned();
        let dir = self.path.parent().expect("log dir");
        let mut old: Vec<PathBuf> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{name}.")))
            .map(|e| e.path())
            .collect();
        old.sort();
        let keep = self.max_files.saturating_sub(1);
        for path in old.iter().take(old.len().saturating_sub(keep)) {
            fs::remove_file(path)?;
        }
        Ok(())
    }
}

/// One record of a CRI log.
pub struct Record<'a> {
    /// RFC 3339 with nanoseconds, UTC: records compare by time as strings.
    pub time: &'a str,
    pub stream: Stream,
    /// `F`: the content ends a line; `P`: a piece of a longer one.
    pub full: bool,
    pub content: &'a [u8],
}

impl Record<'_> {
    /// A record from its line (without the newline); `None` if it is not one.
    pub fn parse(line: &[u8]) -> Option<Record<'_>> {
        let mut fields = line.splitn(4, |b| *b == b' ');
        let time = std::str::from_utf8(fields.next()?).ok()?;
        let stream = match fields.next()? {
            b"stdout" => Stream::Stdout,
            b"stderr" => Stream::Stderr,
            _ => return None,
        };
        let full = fields.next()? != b"P";
        Some(Record { time, stream, full, content: fields.next().unwrap_or(b"") })
    }
}

/// Reads a CRI log as it grows: each call hands over the complete records written since
/// the last, starting over when the file was rotated.
pub struct LogTail {
    path: PathBuf,
    offset: u64,
}

impl LogTail {
    pub fn new(path: &Path) -> LogTail {
        LogTail { path: path.to_path_buf(), offset: 0 }
    }

    /// From what is written after now (what `kubectl attach` sees).
    pub fn from_end(path: &Path) -> LogTail {
        LogTail { path: path.to_path_buf(), offset: std::fs::metadata(path).map_or(0, |m| m.len()) }
    }

    pub fn read_new(&mut self, mut each: impl FnMut(Record) -> io::Result<()>) -> io::Result<()> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if file.metadata()?.len() < self.offset {
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                return Ok(());
            }
            self.offset += n as u64;
            if let Some(record) = Record::parse(&line[..n - 1]) {
                each(record)?;
            }
        }
    }
}

/// `2024-05-01T12:34:56.123456789Z`: UTC, nanoseconds always shown.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!("{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_nanos())
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339_nano() {
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 7);
        assert_eq!(rfc3339_nano(t), "2024-02-29T12:34:56.000000007Z");
    }

    fn records(path: &Path) -> Vec<(String, String, String)> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                let _ts = parts.next().unwrap();
                (parts.next().unwrap().into(), parts.next().unwrap().into(), parts.next().unwrap_or("").into())
            })
            .collect()
    }

    #[test]
    fn writes_full_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let mut log = CriLog::open(&path, 1 << 30, 5).unwrap();
        log.write(Stream::Stdout, b"hel").unwrap();
        log.write(Stream::Stderr, b"oops\n").unwrap();
        log.write(Stream::Stdout, b"lo\n\nlast").unwrap();
        log.write(Stream::Stdout, &vec![b'x'; MAX_LINE + 10]).unwrap();
        log.close(Stream::Stdout).unwrap();
        let r = records(&path);
        assert_eq!(r[0], ("stderr".into(), "F".into(), "oops".into()));
        assert_eq!(r[1], ("stdout".into(), "F".into(), "hello".into()));
        assert_eq!(r[2], ("stdout".into(), "F".into(), "".into()));
        assert_eq!(r[3].1, "P");
        assert_eq!(r[3].2.len(), MAX_LINE);
        assert!(r[3].2.starts_with("last"));
        assert_eq!(r[4], ("stdout".into(), "F".into(), "x".repeat(14)));
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = CriLog::open(&path, 200, 3).unwrap();
        for i in 0..40 {
            log.write(Stream::Stdout, format!("line {i}\n").as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut names: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "0.log");
        assert!(records(&path).last().is_none_or(|r| r.2 == "line 39"));
    }
}
