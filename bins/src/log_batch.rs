//! Batched log output. Every proxied request logs one access line; written one `write(2)`
//! each, that was one syscall in five on the ns-proxy's hot path, and with journald or a file
//! behind stderr, work for someone else per request. Once a role is serving, info and debug
//! lines collect in memory and go out together: when [`LIMIT`] bytes are waiting, or
//! [`FLUSH_EVERY`] after the first of them, from a small thread that sleeps while nothing is
//! waiting. Warnings and errors go out at once, with everything before them, so an operator
//! never waits for the line that matters; so does everything still waiting when the process
//! exits or panics.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use log::{Level, Log, Metadata, Record};

/// How long a line may wait for company.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Waiting bytes that are written at once, without waiting for the flusher.
const LIMIT: usize = 32 * 1024;

/// Where the lines go (stderr or the log file), and the lines waiting for it.
pub struct Sink {
    out: Mutex<Box<dyn Write + Send>>,
    waiting: Mutex<Waiting>,
    /// Wakes the flusher when the first line starts waiting.
    nonempty: Condvar,
}

struct Waiting {
    buf: Vec<u8>,
    /// False until [`Sink::start_batching`]: lines are written as they come.
    batching: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sink {
    pub fn new(out: Box<dyn Write + Send>) -> Arc<Sink> {
        Arc::new(Sink {
            out: Mutex::new(out),
            waiting: Mutex::new(Waiting {
                buf: Vec::new(),
                batching: false,
            }),
            nonempty: Condvar::new(),
        })
    }

    /// Turns batching on and starts the flusher thread. Call once the process is what it will
    /// stay (after daemonizing: a fork keeps only the calling thread).
    pub fn start_batching(self: &Arc<Sink>) -> io::Result<()> {
        let sink = self.clone();
        thread::Builder::new()
            .name("log-flush".into())
            .stack_size(64 * 1024)
            .spawn(move || sink.flusher())?;
        lock(&self.waiting).batching = true;
        let sink = self.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            sink.flush_now();
            previous(info);
        }));
        Ok(())
    }

    /// The flusher thread: asleep while nothing waits, else writes every [`FLUSH_EVERY`].
    fn flusher(&self) {
        loop {
            let mut w = lock(&self.waiting);
            while w.buf.is_empty() {
                w = self
                    .nonempty
                    .wait(w)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            drop(w);
            thread::sleep(FLUSH_EVERY);
            self.flush_now();
        }
    }

    /// Writes everything waiting. The output lock is taken first, so two flushes cannot
    /// reorder lines; a write error is dropped (there is nowhere left to report it).
    pub fn flush_now(&self) {
        let mut out = lock(&self.out);
        let buf = std::mem::take(&mut lock(&self.waiting).buf);
        if !buf.is_empty() {
            let _ = out.write_all(&buf);
            let _ = out.flush();
        }
        // Hand the allocation back, so a steady load does not allocate per flush.
        let mut w = lock(&self.waiting);
        if w.buf.is_empty() {
            w.buf = buf;
            w.buf.clear();
        }
    }

    fn push(&self, line: &[u8]) {
        let mut w = lock(&self.waiting);
        if !w.batching {
            drop(w);
            let mut out = lock(&self.out);
            let _ = out.write_all(line);
            let _ = out.flush();
            return;
        }
        let was_empty = w.buf.is_empty();
        w.buf.extend_from_slice(line);
        let full = w.buf.len() >= LIMIT;
        drop(w);
        if full {
            self.flush_now();
        } else if was_empty {
            self.nonempty.notify_one();
        }
    }
}

/// What env_logger writes each formatted line to. Its per-line `flush` is ignored: when
/// lines are written is the [`Sink`]'s business.
pub struct SinkWriter(pub Arc<Sink>);

impl Write for SinkWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// env_logger's filtering and format, with warnings and errors pushed out at once.
pub struct Batched {
    pub inner: env_logger::Logger,
    pub sink: Arc<Sink>,
}

impl Log for Batched {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.inner.matches(record) {
            return;
        }
        self.inner.log(record);
        if record.level() <= Level::Warn {
            self.sink.flush_now();
        }
    }

    fn flush(&self) {
        self.sink.flush_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that records each `write` call, to count the writes a batch became.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Calls {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            lock(&self.0).push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn before_batching_each_line_is_written_at_once() {
        let calls = Calls::default();
        let sink = Sink::new(Box::new(calls.clone()));
        let mut w = SinkWriter(sink);
        w.write_all(b"one\n").unwrap();
        w.write_all(b"two\n").unwrap();
        assert_eq!(*lock(&calls.0), vec![b"one\n".to_vec(), b"two\n".to_vec()]);
    }

    #[test]
    fn batched_lines_leave_together_in_order_when_flushed() {
        let calls = Calls::default();
        let sink = Sink::new(Box::new(calls.clone()));
        lock(&sink.waiting).batching = true;
        let mut w = SinkWriter(sink.clone());
        for i in 0..100 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        assert!(
            lock(&calls.0).is_empty(),
            "nothing is written before a flush"
        );
        sink.flush_now();
        let calls = lock(&calls.0);
        assert_eq!(calls.len(), 1, "one write for the whole batch");
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(calls[0], expected.into_bytes());
    }

    #[test]
    fn a_full_buffer_is_written_without_waiting_for_the_flusher() {
        let calls = Calls::default();
        let sink = Sink::new(Box::new(calls.clone()));
        lock(&sink.waiting).batching = true;
        let mut w = SinkWriter(sink);
        let line = vec![b'x'; 1000];
        for _ in 0..(LIMIT / line.len() + 1) {
            w.write_all(&line).unwrap();
        }
        let calls = lock(&calls.0);
        assert_eq!(calls.len(), 1);
        assert!(calls[0].len() >= LIMIT);
    }
}
