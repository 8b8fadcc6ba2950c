//! A container's log as kubelet's `/containerLogs` serves it: stdout and stderr merged in
//! the order written, optionally with timestamps, the last N lines, since a time, up to
//! a byte limit, and followed until the container exits.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use runtime::logs::{LogTail, Record, rfc3339_nano};
use tokio::sync::mpsc;

/// How often a followed log is read again.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// The query of a `/containerLogs` request (kubelet's names, as PodLogOptions sends them).
#[derive(Debug, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    /// Records older than this RFC 3339 time (nanoseconds, UTC) are left out.
    pub since: Option<String>,
}

impl LogOptions {
    pub fn parse<'a>(query: impl Iterator<Item = (&'a str, &'a str)>) -> Result<LogOptions, String> {
        let mut options = LogOptions::default();
        let (mut since_seconds, mut since_time) = (None, None);
        for (key, value) in query {
            let flag = || matches!(value, "true" | "1");
            let number = |min: i64| match value.parse::<i64>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(format!("{key}: {value:?} is not an integer of at least {min}")),
            };
            match key {
                "follow" => options.follow = flag(),
                "previous" => options.previous = flag(),
                "timestamps" => options.timestamps = flag(),
                "tailLines" => options.tail_lines = Some(number(0)? as usize),
                "limitBytes" => options.limit_bytes = Some(number(1)? as usize),
                "sinceSeconds" => since_seconds = Some(number(1)?),
                "sinceTime" => since_time = Some(nanosecond_time(value)?),
                _ => {}
            }
        }
        options.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => return Err("at most one of sinceTime or sinceSeconds may be specified".into()),
            (Some(seconds), None) => Some(rfc3339_nano(SystemTime::now() - Duration::from_secs(seconds as u64))),
            (None, time) => time,
        };
        Ok(options)
    }
}

/// `2024-05-01T12:34:56Z` or with a fraction, as the log's own fixed-width form
/// (`.123456789Z`), so that times compare as strings.
fn nanosecond_time(value: &str) -> Result<String, String> {
    let invalid = || format!("sinceTime: {value:?} is not an RFC 3339 time in UTC (…Z)");
    let body = value.strip_suffix('Z').ok_or_else(invalid)?;
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
    let well_formed = seconds.len() == 19
        && seconds.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
        && fraction.len() <= 9
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(invalid());
    }
    Ok(format!("{seconds}.{fraction:0<9}Z"))
}

/// The log file of the container's instance before the current one (`<restart>.log`
/// counts restarts), if it has one.
pub fn previous_log(current: &Path) -> Option<PathBuf> {
    let restart: u32 = current.file_stem()?.to_str()?.parse().ok()?;
    Some(current.with_file_name(format!("{}.log", restart.checked_sub(1)?)))
}

/// Sends the log's chunks to `out` until it is done: at once, or with `follow`, once
/// `running` says the container has stopped (or nobody listens any more). Blocking: run it
/// on a thread of its own.
pub fn stream(path: &Path, options: &LogOptions, running: impl Fn() -> bool, out: mpsc::Sender<Bytes>) {
    let mut tail = LogTail::new(path);
    let mut budget = options.limit_bytes.unwrap_or(usize::MAX);
    let send = |chunk: Vec<u8>, budget: &mut usize| -> bool {
        let chunk = &chunk[..chunk.len().min(*budget)];
        *budget -= chunk.len();
        (chunk.is_empty() || out.blocking_send(Bytes::copy_from_slice(chunk)).is_ok()) && *budget > 0
    };
    let mut first = Vec::new();
    let read = tail.read_new(|record| {
        if options.since.as_deref().is_none_or(|since| record.time >= since) {
            first.push(render(&record, options.timestamps));
        }
        Ok(())
    });
    if read.is_err() {
        return;
    }
    let skip = options.tail_lines.map_or(0, |n| first_of_last_lines(&first, n));
    if !send(first[skip..].concat(), &mut budget) || !options.follow {
        return;
    }
    loop {
        let was_running = running();
        let mut chunk = Vec::new();
        let read = tail.read_new(|record| {
            chunk.extend_from_slice(&render(&record, options.timestamps));
            Ok(())
        });
        if read.is_err() || !send(chunk, &mut budget) || !was_running || out.is_closed() {
            return;
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}

/// A record as the client reads it: a full one ends with its newline.
fn render(record: &Record, timestamps: bool) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(record.content.len() + 40);
    if timestamps {
        bytes.extend_from_slice(record.time.as_bytes());
        bytes.push(b' ');
    }
    bytes.extend_from_slice(record.content);
    if record.full {
        bytes.push(b'\n');
    }
    bytes
}

/// Where the last `n` lines begin among rendered records (a line may span `P` records).
fn first_of_last_lines(records: &[Vec<u8>], n: usize) -> usize {
    let mut lines = 0;
    for (i, record) in records.iter().enumerate().rev() {
        if record.ends_with(b"\n") {
            if lines == n {
                return i + 1;
            }
            lines += 1;
        }
    }
    if n == 0 { records.len() } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_as_kubelet_reads_them() {
        let q = [("follow", "true"), ("tailLines", "5"), ("limitBytes", "10"), ("sinceTime", "2024-05-01T12:34:56Z")];
        let options = LogOptions::parse(q.into_iter()).unwrap();
        assert!(options.follow && !options.previous);
        assert_eq!((options.tail_lines, options.limit_bytes), (Some(5), Some(10)));
        assert_eq!(options.since.as_deref(), Some("2024-05-01T12:34:56.000000000Z"));
        let fraction = LogOptions::parse([("sinceTime", "2024-05-01T12:34:56.5Z")].into_iter()).unwrap();
        assert_eq!(fraction.since.as_deref(), Some("2024-05-01T12:34:56.500000000Z"));
        for bad in [
            vec![("tailLines", "-1")],
            vec![("limitBytes", "0")],
            vec![("sinceTime", "2024-05-01 12:34:56")],
            vec![("sinceTime", "2024-05-01T12:34:56+02:00")],
            vec![("sinceSeconds", "5"), ("sinceTime", "2024-05-01T12:34:56Z")],
        ] {
            assert!(LogOptions::parse(bad.clone().into_iter()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_last_lines_count_pieces_as_part_of_their_line() {
        let records = ["a\n", "b", "b\n", "c\n"].map(|s| s.as_bytes().to_vec());
        assert_eq!(first_of_last_lines(&records, 0), 4);
        assert_eq!(first_of_last_lines(&records, 1), 3);
        assert_eq!(first_of_last_lines(&records, 2), 1);
        assert_eq!(first_of_last_lines(&records, 9), 0);
    }

    #[test]
    fn the_previous_instance_logs_to_the_restart_before() {
        assert_eq!(previous_log(Path::new("/l/c/2.log")), Some(PathBuf::from("/l/c/1.log")));
        assert_eq!(previous_log(Path::new("/l/c/0.log")), None);
    }

    #[test]
    fn a_log_is_limited_tailed_and_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2024-01-01T00:00:01.000000000Z stdout F one\n\
             2024-01-01T00:00:02.000000000Z stderr F two\n\
             2024-01-01T00:00:03.000000000Z stdout P thr\n\
             2024-01-01T00:00:03.500000000Z stdout F ee\n",
        )
        .unwrap();
        let read = |options: LogOptions| {
            let (tx, mut rx) = mpsc::channel(16);
            stream(&path, &options, || false, tx);
            let mut all = Vec::new();
            while let Ok(chunk) = rx.try_recv() {
                all.extend_from_slice(&chunk);
            }
            String::from_utf8(all).unwrap()
        };
        assert_eq!(read(LogOptions::default()), "one\ntwo\nthree\n");
        assert_eq!(read(LogOptions { tail_lines: Some(2), ..Default::default() }), "two\nthree\n");
        assert_eq!(read(LogOptions { limit_bytes: Some(6), ..Default::default() }), "one\ntw");
        let since = Some("2024-01-01T00:00:02.000000000Z".to_string());
        assert_eq!(
            read(LogOptions { since, timestamps: true, ..Default::default() }),
            "2024-01-01T00:00:02.000000000Z two\n2024-01-01T00:00:03.000000000Z thr2024-01-01T00:00:03.500000000Z ee\n"
        );
    }
}
