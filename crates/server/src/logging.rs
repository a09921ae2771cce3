//! Log output: one process-wide [`Sink`] that every log line is appended to
//! whole, and the decision line written straight into it.
//!
//! `warden serve` points tracing's JSON formatter at the sink (through
//! [`Sink::writer`]) and installs it with [`init_global`]; the per-decision
//! line ([`decision`]) skips tracing's formatter and writes its JSON by hand
//! into the same sink. Because both append whole lines under one lock,
//! lines never interleave mid-line and keep their order per thread.
//!
//! A background thread drains the buffer to the output (stderr): a line is
//! written at most [`FLUSH_INTERVAL`] after it is appended (plus however
//! long the output takes to accept the batch before it; at once when
//! [`WAKE_BYTES`] are waiting), so under load one `write(2)` carries
//! hundreds of lines, and an idle server's writer thread sleeps. Nothing is
//! dropped: past [`MAX_BUFFERED_BYTES`] (the output is blocked) logging
//! waits for room. Dropping the [`SinkGuard`] writes out everything
//! appended before (giving up only on an output that accepts nothing for
//! a second).

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest a buffered line waits before the writer thread writes it
/// out (plus the time the output takes to accept the previous batch).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(5);

/// Buffered bytes that wake the writer thread before [`FLUSH_INTERVAL`].
pub const WAKE_BYTES: usize = 32 * 1024;

/// Buffered bytes past which appending waits for the writer thread (the
/// output is blocked) instead of dropping lines or growing without bound.
pub const MAX_BUFFERED_BYTES: usize = 8 * 1024 * 1024;

/// How long dropping the [`SinkGuard`] waits for an output that accepts
/// nothing at all (a blocked pipe) before giving up on what is left.
const STALL_LIMIT: Duration = Duration::from_secs(1);

/// The target of decision lines, for `WARDEN_LOG` directives.
pub const DECISION_TARGET: &str = "warden::decision";

/// Written out in pieces of about this size (cut at a line end), so a
/// stalled output is told apart from a slow one.
const PIECE_BYTES: usize = 256 * 1024;

type Output = Box<dyn Write + Send>;

/// A process-wide log buffer drained by a background writer thread.
/// Cheap to clone; every clone appends to the same buffer.
#[derive(Clone)]
pub struct Sink {
    shared: Arc<Shared>,
}

/// Owns the writer thread; dropping it writes out every line appended so
/// far and stops the thread. Lines appended after that go straight to the
/// output.
#[must_use = "dropping the guard stops the log writer"]
pub struct SinkGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread: a first line after idling, the buffer past
    /// [`WAKE_BYTES`], or closing.
    wake: Condvar,
    /// Wakes appenders waiting for room, and the guard waiting for the
    /// writer thread to finish.
    room: Condvar,
    /// Bytes the writer thread has written (to tell a stalled output).
    written: AtomicU64,
}

struct State {
    buf: Vec<u8>,
    /// The writer thread waits for a first line with no timeout: the next
    /// append must wake it.
    idle: bool,
    /// Appenders waiting for the buffer to drop below the cap.
    waiting_for_room: usize,
    /// The guard was dropped: write out what is left, then stop.
    closing: bool,
    /// Set when the writer thread has stopped: appends go straight here.
    output: Option<Output>,
    /// Dropping the guard gave up on a stalled output: appends return at
    /// once (the process is exiting).
    abandoned: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // No code panics while holding the lock, and the state is valid
    // between any two statements anyway: a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sink {
    /// Starts a writer thread draining into `output`.
    pub fn start(output: impl Write + Send + 'static) -> io::Result<(Sink, SinkGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(WAKE_BYTES * 2),
                idle: false,
                waiting_for_room: 0,
                closing: false,
                output: None,
                abandoned: false,
            }),
            wake: Condvar::new(),
            room: Condvar::new(),
            written: AtomicU64::new(0),
        });
        let worker = Arc::clone(&shared);
        let output: Output = Box::new(output);
        let thread = std::thread::Builder::new()
            .name("warden-log".to_owned())
            .spawn(move || run(&worker, output))?;
        Ok((
            Sink {
                shared: Arc::clone(&shared),
            },
            SinkGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Appends `bytes` (whole lines) to the buffer; waits while the buffer
    /// holds [`MAX_BUFFERED_BYTES`].
    pub fn append(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let shared = &*self.shared;
        let mut st = lock(&shared.state);
        while st.buf.len() >= MAX_BUFFERED_BYTES && st.output.is_none() && !st.abandoned {
            st.waiting_for_room += 1;
            st = shared.room.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.waiting_for_room -= 1;
        }
        if let Some(output) = st.output.as_mut() {
            // The writer thread is gone (shutdown): write through, still
            // under the lock so lines stay whole and in order.
            let _ = write_fully(output.as_mut(), bytes);
            return;
        }
        if st.abandoned {
            // Exiting, and the output accepts nothing.
            return;
        }
        let before = st.buf.len();
        st.buf.extend_from_slice(bytes);
        let wake = st.idle || (before < WAKE_BYTES && st.buf.len() >= WAKE_BYTES);
        st.idle = false;
        drop(st);
        if wake {
            shared.wake.notify_one();
        }
    }

    /// An [`io::Write`] for one log event (tracing-subscriber's
    /// `MakeWriter`: `.with_writer(move || sink.writer())`). A write that
    /// ends a line is appended at once; anything else is held until the
    /// writer is dropped, so an event is never split between two appends.
    pub fn writer(&self) -> SinkWriter<'_> {
        SinkWriter {
            sink: self,
            pending: Vec::new(),
        }
    }
}

/// See [`Sink::writer`].
pub struct SinkWriter<'a> {
    sink: &'a Sink,
    pending: Vec<u8>,
}

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() && buf.last() == Some(&b'\n') {
            self.sink.append(buf);
        } else {
            self.pending.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SinkWriter<'_> {
    fn drop(&mut self) {
        self.sink.append(&self.pending);
    }
}

/// The writer thread: waits for a first line, lets the buffer fill for up
/// to [`FLUSH_INTERVAL`] (or [`WAKE_BYTES`]), swaps it out and writes it.
fn run(shared: &Shared, mut output: Output) {
    let mut batch: Vec<u8> = Vec::with_capacity(WAKE_BYTES * 2);
    loop {
        let mut st = lock(&shared.state);
        while st.buf.is_empty() && !st.closing {
            st.idle = true;
            st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.idle = false;
        let deadline = Instant::now() + FLUSH_INTERVAL;
        while st.buf.len() < WAKE_BYTES && !st.closing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = shared
                .wake
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if st.buf.is_empty() {
            // Closing, and everything is written: later appends write
            // through.
            st.output = Some(output);
            drop(st);
            shared.room.notify_all();
            return;
        }
        std::mem::swap(&mut st.buf, &mut batch);
        let waiting = st.waiting_for_room > 0;
        drop(st);
        if waiting {
            shared.room.notify_all();
        }
        write_batch(shared, output.as_mut(), &batch);
        batch.clear();
        // A burst may have grown the buffer to megabytes: give them back.
        batch.shrink_to(WAKE_BYTES * 2);
    }
}

/// Writes `batch` in line-aligned pieces, counting progress. A failing
/// output loses the rest of this batch (there is nowhere to report it);
/// the next batch tries again.
fn write_batch(shared: &Shared, output: &mut dyn Write, batch: &[u8]) {
    let mut rest = batch;
    while !rest.is_empty() {
        let cut = piece_len(rest);
        let (piece, tail) = rest.split_at(cut);
        if write_fully(output, piece).is_err() {
            return;
        }
        shared
            .written
            .fetch_add(piece.len() as u64, Ordering::Relaxed);
        rest = tail;
    }
    let _ = output.flush();
}

/// The length of the next piece of `rest`: up to [`PIECE_BYTES`], cut after
/// a newline when there is one.
fn piece_len(rest: &[u8]) -> usize {
    if rest.len() <= PIECE_BYTES {
        return rest.len();
    }
    let window = rest.get(..PIECE_BYTES).unwrap_or(rest);
    match window.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1),
    }
}

/// `write_all` that also waits out a non-blocking output's `WouldBlock`
/// instead of losing track of what was written.
fn write_fully(output: &mut dyn Write, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match output.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        let shared = &*self.shared;
        let mut st = lock(&shared.state);
        st.closing = true;
        shared.wake.notify_one();
        // Wait for the writer thread to write everything out, as long as
        // the output keeps accepting bytes.
        let mut seen = shared.written.load(Ordering::Relaxed);
        let mut since = Instant::now();
        while st.output.is_none() {
            st = shared
                .room
                .wait_timeout(st, STALL_LIMIT / 4)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            let now = shared.written.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                since = Instant::now();
            } else if since.elapsed() >= STALL_LIMIT && st.output.is_none() {
                // The output is stuck (a pipe nobody reads): leave the
                // writer thread to it rather than hang the exit.
                st.abandoned = true;
                shared.room.notify_all();
                return;
            }
        }
        drop(st);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

static GLOBAL: OnceLock<Sink> = OnceLock::new();

/// Starts the process-wide sink writing to `output` (stderr for `warden
/// serve`) and makes [`decision`] write into it. `None` if one was started
/// already (or the writer thread cannot start).
pub fn init_global(output: impl Write + Send + 'static) -> Option<(&'static Sink, SinkGuard)> {
    if GLOBAL.get().is_some() {
        return None;
    }
    let (sink, guard) = Sink::start(output).ok()?;
    GLOBAL.set(sink).ok()?;
    Some((GLOBAL.get()?, guard))
}

/// The process-wide sink, once [`init_global`] ran.
pub fn global() -> Option<&'static Sink> {
    GLOBAL.get()
}

/// The fields of one decision line, written as JSON in call order. Keys are
/// static names (written as they are); values are escaped.
pub struct Fields<'a> {
    buf: &'a mut Vec<u8>,
}

impl Fields<'_> {
    fn key(&mut self, key: &'static str) {
        debug_assert!(
            key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "log keys are plain names: {key:?}"
        );
        self.buf.extend_from_slice(b",\"");
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// `"key":"value"`.
    pub fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        self.buf.push(b'"');
        escape_into(self.buf, value);
        self.buf.push(b'"');
    }

    /// `"key":"value"`, or nothing at all for `None` (as tracing records an
    /// `Option` field).
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    /// `"key":"a,b,c"`: the values joined by commas.
    pub fn joined<'v>(&mut self, key: &'static str, values: impl IntoIterator<Item = &'v str>) {
        self.key(key);
        self.buf.push(b'"');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            escape_into(self.buf, v);
        }
        self.buf.push(b'"');
    }

    /// `"key":123`.
    pub fn u64(&mut self, key: &'static str, value: u64) {
        self.key(key);
        push_u64(self.buf, value);
    }

    /// `"key":true`.
    pub fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
    }
}

/// The contents of a JSON string for `s`, escaped exactly as serde_json
/// (and so tracing's JSON formatter) escapes it.
fn escape_into(buf: &mut Vec<u8>, s: &str) {
    crate::json_text::push_escaped(buf, s, crate::json_text::Times::Once);
}

/// `n` in decimal.
fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(digits.get(digits.len() - len..).unwrap_or_default());
}

/// Logs one decision: a JSON line with `timestamp`, `level` (`INFO`),
/// `message` (`decision`), the fields `fields` writes, and `target`
/// (`warden::decision`), exactly as tracing's JSON formatter prints the
/// same `tracing::info!` event (with `flatten_event`), but without its
/// per-field machinery or the tracing-serde visitor.
///
/// Respects the subscriber's filter (`WARDEN_LOG`): nothing is formatted
/// unless `warden::decision` is enabled at INFO. Goes to the process-wide
/// sink; without one (an embedder with its own subscriber), straight to
/// stderr.
pub fn decision(fields: impl FnOnce(&mut Fields<'_>)) {
    if !tracing::enabled!(target: DECISION_TARGET, tracing::Level::INFO) {
        return;
    }
    let emit = |buf: &mut Vec<u8>| {
        buf.clear();
        write_decision(buf, SystemTime::now(), fields);
        match global() {
            Some(sink) => sink.append(buf),
            None => {
                let _ = io::stderr().lock().write_all(buf);
            }
        }
    };
    thread_local! {
        /// Reused for every decision line of this thread.
        static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    LINE.with(|line| match line.try_borrow_mut() {
        Ok(mut buf) => {
            emit(&mut buf);
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::new();
            }
        }
        Err(_) => emit(&mut Vec::new()),
    });
}

/// One decision line (with its newline) into `buf`.
fn write_decision(buf: &mut Vec<u8>, now: SystemTime, fields: impl FnOnce(&mut Fields<'_>)) {
    buf.extend_from_slice(b"{\"timestamp\":\"");
    write_timestamp(buf, now);
    buf.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"decision\"");
    fields(&mut Fields { buf: &mut *buf });
    buf.extend_from_slice(b",\"target\":\"");
    buf.extend_from_slice(DECISION_TARGET.as_bytes());
    buf.extend_from_slice(b"\"}\n");
}

/// `2026-11-23T16:46:02.549279Z`: UTC with microseconds, as
/// tracing-subscriber's default timer prints it.
fn write_timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let (secs, micros) = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_micros(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, (1_000_000_000 - n) / 1_000),
            }
        }
    };
    // Clamped to the years -9999 to 9999 that jiff keeps a calendar for.
    let at = jiff::Timestamp::from_second(secs).unwrap_or(if secs < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    let civil = jiff::tz::Offset::UTC.to_datetime(at);
    let (year, month, day) = (
        civil.year(),
        civil.month().unsigned_abs(),
        civil.day().unsigned_abs(),
    );
    let tod = u64::from(civil.hour().unsigned_abs()) * 3600
        + u64::from(civil.minute().unsigned_abs()) * 60
        + u64::from(civil.second().unsigned_abs());
    match u64::try_from(year) {
        Ok(y) => push_digits(buf, y, 4),
        Err(_) => {
            let _ = write!(buf, "{year:05}");
        }
    }
    buf.push(b'-');
    push_digits(buf, u64::from(month), 2);
    buf.push(b'-');
    push_digits(buf, u64::from(day), 2);
    buf.push(b'T');
    push_digits(buf, tod / 3600, 2);
    buf.push(b':');
    push_digits(buf, tod / 60 % 60, 2);
    buf.push(b':');
    push_digits(buf, tod % 60, 2);
    buf.push(b'.');
    push_digits(buf, u64::from(micros), 6);
    buf.push(b'Z');
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_digits(buf: &mut Vec<u8>, mut n: u64, width: usize) {
    let start = buf.len();
    buf.resize(start + width, b'0');
    if let Some(digits) = buf.get_mut(start..) {
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// An output that keeps what is written, for reading back.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        /// Waits (bounded) until the output contains `needle`.
        fn wait_for(&self, needle: &str) -> String {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = self.text();
                if text.contains(needle) {
                    return text;
                }
                assert!(Instant::now() < deadline, "no {needle:?} in {text:?}");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn concurrent_lines_stay_whole_and_in_order_per_thread() {
        let out = Capture::default();
        let (sink, guard) = Sink::start(out.clone()).unwrap();
        const THREADS: usize = 8;
        const LINES: usize = 3000;
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let sink = sink.clone();
                s.spawn(move || {
                    for n in 0..LINES {
                        // Lengths vary so lines straddle batch boundaries.
                        let pad = "x".repeat((n * 7 + t) % 300);
                        if n % 3 == 0 {
                            // Through the tracing writer, in two writes.
                            let mut w = sink.writer();
                            write!(w, "{{\"t\":{t},\"n\":{n},").unwrap();
                            writeln!(w, "\"pad\":\"{pad}\"}}").unwrap();
                        } else {
                            sink.append(
                                format!("{{\"t\":{t},\"n\":{n},\"pad\":\"{pad}\"}}\n").as_bytes(),
                            );
                        }
                    }
                });
            }
        });
        drop(guard);
        let text = out.text();
        let mut next = [0usize; THREADS];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a mangled line ({e}): {line:?}"));
            let t = v["t"].as_u64().unwrap() as usize;
            assert_eq!(
                v["n"].as_u64().unwrap() as usize,
                next[t],
                "thread {t} out of order"
            );
            next[t] += 1;
        }
        assert_eq!(next, [LINES; THREADS], "every line arrives");
    }

    #[test]
    fn dropping_the_guard_writes_everything_out_and_later_lines_go_through() {
        let out = Capture::default();
        let (sink, guard) = Sink::start(out.clone()).unwrap();
        for n in 0..1000 {
            sink.append(format!("line {n}\n").as_bytes());
        }
        drop(guard);
        let text = out.text();
        assert_eq!(text.lines().count(), 1000);
        assert!(text.ends_with("line 999\n"));
        sink.append(b"after\n");
        assert!(out.text().ends_with("line 999\nafter\n"));
    }

    #[test]
    fn a_quiet_line_is_written_within_the_flush_interval() {
        let out = Capture::default();
        let (sink, _guard) = Sink::start(out.clone()).unwrap();
        for n in 0..3 {
            let started = Instant::now();
            sink.append(format!("quiet {n}\n").as_bytes());
            out.wait_for(&format!("quiet {n}\n"));
            // Generous bound: the machine may be loaded.
            assert!(started.elapsed() < Duration::from_secs(2));
            std::thread::sleep(FLUSH_INTERVAL * 2);
        }
    }

    /// An output that blocks until released, then keeps what is written.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<AtomicBool>,
        out: Capture,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            while !self.open.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_output_makes_logging_wait_instead_of_dropping() {
        let gate = Gate::default();
        let (sink, guard) = Sink::start(gate.clone()).unwrap();
        let line = format!("{}\n", "y".repeat(1023));
        let total = MAX_BUFFERED_BYTES / line.len() * 3;
        let appended = Arc::new(AtomicU64::new(0));
        let writer = {
            let (sink, line, appended) = (sink.clone(), line.clone(), Arc::clone(&appended));
            std::thread::spawn(move || {
                for _ in 0..total {
                    sink.append(line.as_bytes());
                    appended.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        // The appender fills the buffer (and the batch the writer thread
        // holds), then waits.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = u64::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = appended.load(Ordering::SeqCst);
            if now == last {
                break;
            }
            last = now;
            assert!(Instant::now() < deadline, "the appender never waited");
        }
        assert!((last as usize) < total, "the appender waits for room");
        assert!(!writer.is_finished());
        gate.open.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        drop(guard);
        let text = gate.out.text();
        assert_eq!(text.len(), total * line.len(), "no line is dropped");
        assert!(text.lines().all(|l| l.len() == 1023));
    }

    /// An output that fails every write.
    struct Broken(Arc<AtomicU64>);

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
        }
    }

    #[test]
    fn a_failing_output_neither_panics_nor_spins() {
        let attempts = Arc::new(AtomicU64::new(0));
        let (sink, guard) = Sink::start(Broken(Arc::clone(&attempts))).unwrap();
        for n in 0..100 {
            sink.append(format!("lost {n}\n").as_bytes());
        }
        std::thread::sleep(Duration::from_millis(200));
        let tried = attempts.load(Ordering::SeqCst);
        assert!(tried >= 1, "the writer thread tried");
        // Nothing new to write: no retries in a loop.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(attempts.load(Ordering::SeqCst), tried, "no spinning");
        sink.append(b"more\n");
        let started = Instant::now();
        drop(guard);
        assert!(started.elapsed() < Duration::from_secs(1));
        sink.append(b"after the guard\n");
    }

    #[test]
    fn dropping_the_guard_gives_up_on_an_output_that_accepts_nothing() {
        let gate = Gate::default();
        let (sink, guard) = Sink::start(gate.clone()).unwrap();
        sink.append(b"stuck\n");
        std::thread::sleep(FLUSH_INTERVAL * 4);
        let started = Instant::now();
        drop(guard);
        let waited = started.elapsed();
        assert!(
            waited >= STALL_LIMIT && waited < STALL_LIMIT * 5,
            "{waited:?}"
        );
        // Logging after giving up returns at once.
        sink.append(b"dropped\n");
        gate.open.store(true, Ordering::SeqCst);
    }

    #[test]
    fn timestamps_match_rfc3339_in_microseconds() {
        let instants: [i64; 10] = [
            0,
            1,
            951_782_400,     // 2000-02-29
            4_107_542_400,   // 2100-03-01
            1_795_452_362,   // 2026-11-23
            253_402_207_199, // 9999-12-30T21:59:59, near jiff's limit
            1_709_164_799,   // 2024-02-28T23:59:59
            -1,
            -86_401,
            -62_135_596_800, // 0001-01-01
        ];
        for secs in instants {
            for micros in [0u32, 1, 549_279, 999_999] {
                let t = if secs >= 0 {
                    UNIX_EPOCH + Duration::new(secs as u64, micros * 1000)
                } else {
                    UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                        + Duration::from_micros(micros.into())
                };
                let mut buf = Vec::new();
                write_timestamp(&mut buf, t);
                let ts = jiff::Timestamp::try_from(t).unwrap();
                let want = ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
                assert_eq!(String::from_utf8(buf).unwrap(), want, "{secs}s {micros}us");
            }
        }
        let mut buf = Vec::new();
        write_timestamp(
            &mut buf,
            UNIX_EPOCH + Duration::new(1_795_452_362, 549_279_999),
        );
        assert_eq!(buf, b"2026-11-23T16:46:02.549279Z");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every_ascii = String::new();
        for b in 0u8..=0x7f {
            every_ascii.push(char::from(b));
        }
        for s in [
            "",
            "plain",
            &every_ascii,
            "quote \" backslash \\ newline \n tab \t nul \0 esc \u{1b} del \u{7f}",
            "ünïcødé ✓ \u{2028} 𝄞",
        ] {
            let mut buf = Vec::new();
            escape_into(&mut buf, s);
            let want = serde_json::to_string(s).unwrap();
            assert_eq!(
                format!("\"{}\"", String::from_utf8(buf).unwrap()),
                want,
                "{s:?}"
            );
        }
        for n in [0, 7, 10, 31_337, u64::MAX] {
            let mut buf = Vec::new();
            push_u64(&mut buf, n);
            assert_eq!(buf, n.to_string().as_bytes());
        }
    }

    /// The decision fields of `app::log_decision`, with a hostile user name.
    fn sample(line: &mut Fields<'_>, team: Option<&str>, user: Option<&str>) {
        line.str("request_id", "6921a3c4-17");
        line.str("door", "skypilot");
        line.opt_str("team", team);
        line.opt_str("user", user);
        line.str("request", "launch");
        line.str("verdict", "deny");
        line.bool("quota_denied", false);
        line.joined("denied", ["no-h100", "team.resolve"]);
        line.joined("warned", []);
        line.joined("mutated", ["spot-for-gpu"]);
        line.u64("latency_us", 31);
    }

    /// What tracing's JSON formatter (as `warden serve` configures it)
    /// prints for the same event, with the timestamp blanked.
    fn by_tracing(team: Option<&str>, user: Option<&str>) -> String {
        blank_timestamp(&tracing_json(|| {
            tracing::info!(
                target: "warden::decision",
                request_id = "6921a3c4-17",
                door = "skypilot",
                team,
                user,
                request = "launch",
                verdict = "deny",
                quota_denied = false,
                denied = "no-h100,team.resolve",
                warned = "",
                mutated = "spot-for-gpu",
                latency_us = 31_u64,
                "decision"
            );
        }))
    }

    /// What `emit`'s events look like through tracing's JSON formatter,
    /// configured as `warden serve` configures it.
    fn tracing_json(emit: impl FnOnce()) -> String {
        let out = Capture::default();
        let make = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(move || make.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        out.text()
    }

    fn blank_timestamp(line: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-11-23T16:46:02.549279Z".len(), "{ts}");
        line.replacen(ts, "T", 1)
    }

    #[test]
    fn the_decision_line_is_what_tracings_json_formatter_prints() {
        let hostile = "eve \"the\" admin\\\nnext line\ttab\u{1}\u{1f}é";
        for (team, user) in [
            (Some("ml-research"), Some("alice")),
            (None, Some(hostile)),
            (Some("ml"), None),
            (None, None),
        ] {
            let mut buf = Vec::new();
            write_decision(&mut buf, SystemTime::now(), |l| sample(l, team, user));
            let ours = String::from_utf8(buf).unwrap();
            assert_eq!(ours.matches('\n').count(), 1, "one line: {ours:?}");
            assert_eq!(blank_timestamp(&ours), by_tracing(team, user));
            let v: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(v["user"].as_str(), user);
            assert_eq!(
                v.get("team").is_none(),
                team.is_none(),
                "a missing team is left out"
            );
            assert_eq!(v["latency_us"], 31);
            assert_eq!(v["quota_denied"], false);
        }
    }

    /// The Vast door's decision line (`doors/vast/create.rs`, still a
    /// `tracing::info!`) has other fields and value types (`String`,
    /// `Option<String>`); the fast writer reproduces them as well.
    #[test]
    fn the_vast_door_decision_shape_is_reproduced_too() {
        let skipped = ["cap: autostop".to_owned(), "x \"y\"".to_owned()];
        for (target_name, hourly) in [(Some("run-1"), Some("2.41".to_owned())), (None, None)] {
            let by_tracing = tracing_json(|| {
                tracing::info!(
                    target: "warden::decision",
                    request_id = "r-1",
                    door = "vast",
                    team = "ml",
                    user = Some("bob"),
                    key = "k_1",
                    request = "launch",
                    target_name,
                    verdict = "allow",
                    quota_denied = false,
                    denied = "",
                    warned = "w",
                    mutated = "spot,tags",
                    not_applicable = skipped.join(","),
                    hourly_usd = hourly.clone(),
                    "decision"
                );
            });
            let mut buf = Vec::new();
            write_decision(&mut buf, SystemTime::now(), |line| {
                line.str("request_id", "r-1");
                line.str("door", "vast");
                line.str("team", "ml");
                line.opt_str("user", Some("bob"));
                line.str("key", "k_1");
                line.str("request", "launch");
                line.opt_str("target_name", target_name);
                line.str("verdict", "allow");
                line.bool("quota_denied", false);
                line.joined("denied", []);
                line.joined("warned", ["w"]);
                line.joined("mutated", ["spot", "tags"]);
                line.joined("not_applicable", skipped.iter().map(String::as_str));
                line.opt_str("hourly_usd", hourly.as_deref());
            });
            let ours = String::from_utf8(buf).unwrap();
            assert_eq!(blank_timestamp(&ours), blank_timestamp(&by_tracing));
        }
    }

    #[test]
    fn decision_lines_respect_the_filter_and_share_the_sink_with_events() {
        // The test binary's process-wide sink (the guard lives forever).
        static OUT: OnceLock<Capture> = OnceLock::new();
        let out = OUT.get_or_init(|| {
            let out = Capture::default();
            let (_, guard) = init_global(out.clone()).unwrap();
            std::mem::forget(guard);
            out
        });
        let sink = global().unwrap();
        let subscriber = |filter: &str| {
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(move || sink.writer())
                .finish()
        };
        let line = |id: &'static str| move |l: &mut Fields<'_>| l.str("request_id", id);
        tracing::subscriber::with_default(subscriber("warn"), || {
            decision(line("filtered-1"));
            tracing::warn!(id = "warn-1", "a warning");
        });
        tracing::subscriber::with_default(subscriber("info,warden::decision=warn"), || {
            decision(line("filtered-2"));
        });
        tracing::subscriber::with_default(subscriber("info"), || {
            tracing::info!(id = "event-1", "before");
            decision(line("logged-1"));
            tracing::info!(id = "event-2", "after");
        });
        let text = out.wait_for("event-2");
        assert!(!text.contains("filtered-"), "{text}");
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {text}"))
        };
        assert!(at("warn-1") < at("event-1"));
        assert!(at("event-1") < at("logged-1") && at("logged-1") < at("event-2"));
        assert!(text.contains(
            "\"level\":\"INFO\",\"message\":\"decision\",\"request_id\":\"logged-1\",\"target\":\"warden::decision\"}\n"
        ));
    }
}
