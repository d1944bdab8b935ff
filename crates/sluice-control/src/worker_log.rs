//! A worker's log: `worker.log` in its pipeline's folder, the worker's stdout and stderr
//! appended across runs, kept to a size limit by rotation into `worker.log.1`, and read back
//! from its end for the logs endpoint.
//!
//! Workers outlive the control plane and never reopen their log, so rotation copies the file
//! and truncates it in place (the file is opened for appending, so the worker's next line lands
//! at the new start, not past a hole). A line written between the copy's end and the truncation
//! is lost: microseconds, once per rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The current log of a pipeline folder.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("worker.log")
}

/// The rotated (previous) log of a pipeline folder.
pub fn rotated_path(dir: &Path) -> PathBuf {
    dir.join("worker.log.1")
}

/// Opens the log for appending (created if missing), for a new worker's stdout and stderr.
pub fn open(dir: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path(dir))
}

/// Rotates the log if it is larger than `limit` bytes: its contents replace `worker.log.1` and
/// it starts again empty. Returns whether it rotated.
pub fn rotate_if_larger(dir: &Path, limit: u64) -> io::Result<bool> {
    let log = path(dir);
    match std::fs::metadata(&log) {
        Ok(metadata) if metadata.len() > limit => {}
        Ok(_) => return Ok(false),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    }
    let partial = dir.join("worker.log.1.partial");
    // Copies up to the end as it is when the copy ends, lines appended meanwhile included.
    io::copy(&mut File::open(&log)?, &mut File::create(&partial)?)?;
    OpenOptions::new().write(true).open(&log)?.set_len(0)?;
    std::fs::rename(&partial, rotated_path(dir))?;
    Ok(true)
}

/// The last `lines` lines of the log, reading at most `most` bytes of each file: from the
/// current log, and from the rotated one when the current holds fewer lines.
pub fn tail(dir: &Path, lines: usize, most: u64) -> io::Result<String> {
    let mut kept: Vec<String> = Vec::new();
    for file in [path(dir), rotated_path(dir)] {
        if kept.len() >= lines {
            break;
        }
        let bytes = match read_end(&file, most) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        let text = String::from_utf8_lossy(&bytes);
        let older: Vec<&str> = text.lines().collect();
        let wanted = lines - kept.len();
        let mut taken: Vec<String> =
            older[older.len().saturating_sub(wanted)..].iter().map(|l| l.to_string()).collect();
        taken.append(&mut kept);
        kept = taken;
    }
    Ok(kept.join("\n"))
}

/// The last `most` bytes of the file at `path` (all of it when shorter), starting after a line
/// break when cut.
fn read_end(path: &Path, most: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let length = file.metadata()?.len();
    let start = length.saturating_sub(most);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((length - start) as usize);
    file.read_to_end(&mut bytes)?;
    if start > 0 {
        let first_line = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |at| at + 1);
        bytes.drain(..first_line);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn lines(from: usize, to: usize) -> String {
        (from..to).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn a_log_is_read_from_its_end_in_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "first line\nsecond line\nthird\n").unwrap();
        assert_eq!(read_end(&path(dir.path()), 1 << 20).unwrap(), b"first line\nsecond line\nthird\n");
        // Cut inside "second line": the partial line is dropped.
        assert_eq!(read_end(&path(dir.path()), 10).unwrap(), b"third\n");
        assert_eq!(tail(dir.path(), 2, 1 << 20).unwrap(), "second line\nthird");
    }

    #[test]
    fn rotation_keeps_what_was_written_and_the_writer_goes_on_at_the_start() {
        let dir = tempfile::tempdir().unwrap();
        // The worker's handle, opened before the rotation and never reopened.
        let mut worker = open(dir.path()).unwrap();
        worker.write_all(lines(0, 100).as_bytes()).unwrap();
        assert!(!rotate_if_larger(dir.path(), 1 << 20).unwrap(), "small logs stay");
        assert!(rotate_if_larger(dir.path(), 100).unwrap());
        assert_eq!(std::fs::read_to_string(rotated_path(dir.path())).unwrap(), lines(0, 100));
        worker.write_all(lines(100, 110).as_bytes()).unwrap();
        // No hole of zero bytes where the old contents were: appending continues at the start.
        assert_eq!(std::fs::read_to_string(path(dir.path())).unwrap(), lines(100, 110));
        // The tail spans both files when the current one is short.
        let expected: Vec<String> = (95..110).map(|i| format!("line {i}")).collect();
        assert_eq!(tail(dir.path(), 15, 1 << 20).unwrap(), expected.join("\n"));
        assert_eq!(tail(dir.path(), 3, 1 << 20).unwrap(), "line 107\nline 108\nline 109");
        // A second rotation replaces the first: at most twice the limit on disk.
        worker.write_all(lines(110, 200).as_bytes()).unwrap();
        assert!(rotate_if_larger(dir.path(), 100).unwrap());
        assert_eq!(std::fs::read_to_string(rotated_path(dir.path())).unwrap(), lines(100, 200));
        assert!(!dir.path().join("worker.log.1.partial").exists());
    }

    #[test]
    fn no_log_yet_is_an_empty_tail_and_nothing_to_rotate() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(tail(dir.path(), 10, 1 << 20).unwrap(), "");
        assert!(!rotate_if_larger(dir.path(), 0).unwrap());
    }
}
