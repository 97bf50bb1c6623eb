//! The host's log output: standard error, buffered. A busy host logs a line per request, and one
//! `write(2)` per line cost 5–10% of its CPU on small requests (README, Benchmarks). Lines are
//! gathered in memory and written together: at least every [`FLUSH_INTERVAL`] by a background
//! thread, at once when [`BUFFER_FLUSH_BYTES`] are waiting, and at once — with every line before
//! it, so the order holds — for a warning or an error. A `kill -9` loses at most the last
//! interval's info lines; never a warning.

use std::io::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Longest time a line waits in memory.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Lines waiting that make the next line write them all.
pub const BUFFER_FLUSH_BYTES: usize = 64 << 10;

/// Makes the writers of `tracing_subscriber::fmt` for buffered standard error. Clones share
/// one buffer.
#[derive(Clone)]
pub struct BufferedStderr {
    pending: Arc<Mutex<Vec<u8>>>,
}

impl BufferedStderr {
    /// A buffer, and the thread that writes it out every [`FLUSH_INTERVAL`] for as long as the
    /// process lives.
    pub fn start() -> BufferedStderr {
        let log = BufferedStderr { pending: Arc::new(Mutex::new(Vec::with_capacity(BUFFER_FLUSH_BYTES))) };
        let flusher = log.clone();
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    flusher.flush();
                }
            })
            .ok();
        log
    }

    /// Write out every line waiting.
    pub fn flush(&self) {
        write_out(&mut self.lock());
    }

    /// A guard that writes out every line waiting when it is dropped: keep it in `main`, so the
    /// last lines are written however `main` ends, a panic included.
    pub fn flush_on_drop(&self) -> FlushOnDrop {
        FlushOnDrop(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A thread that panicked while appending left whole lines or a partial one: still text.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn write_out(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        // Nowhere to report a failure to write standard error.
        let _ = std::io::stderr().lock().write_all(pending);
        pending.clear();
        // One huge line must not keep its memory for the life of the process.
        pending.shrink_to(BUFFER_FLUSH_BYTES);
    }
}

/// See [`BufferedStderr::flush_on_drop`].
pub struct FlushOnDrop(BufferedStderr);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// One event's output: appended to the buffer when the formatter writes it.
pub struct Line<'a> {
    log: &'a BufferedStderr,
    urgent: bool,
}

impl std::io::Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.log.lock();
        pending.extend_from_slice(bytes);
        if self.urgent || pending.len() >= BUFFER_FLUSH_BYTES {
            write_out(&mut pending);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { log: self, urgent: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line { log: self, urgent: *meta.level() <= Level::WARN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lines_wait_and_warnings_write_everything_before_them() {
        let log = BufferedStderr { pending: Arc::new(Mutex::new(Vec::new())) };
        Line { log: &log, urgent: false }.write_all(b"request\n").unwrap();
        assert_eq!(log.lock().as_slice(), b"request\n", "an info line waits");
        Line { log: &log, urgent: true }.write_all(b"stopped\n").unwrap();
        assert!(log.lock().is_empty(), "a warning writes itself and what waited before it");
        Line { log: &log, urgent: false }.write_all(&vec![b'x'; BUFFER_FLUSH_BYTES]).unwrap();
        assert!(log.lock().is_empty(), "a full buffer is written");
        Line { log: &log, urgent: false }.write_all(b"request\n").unwrap();
        log.flush();
        assert!(log.lock().is_empty(), "flush writes what waits");
    }
}
