//! The guest's console output on its way to ember's stdout: a bounded
//! buffer drained by a writer thread of its own.
//!
//! The UART (on a vCPU thread) and the virtio console (on its queue
//! thread) never write to stdout themselves: a stdout that nobody reads (a
//! stalled log collector, a full pipe) would block them, and with them the
//! VM's stop. They append to an [`Output`] instead, which never blocks
//! (so no device lock is ever held across a wait). Back-pressure happens
//! outside every lock: once the buffer holds [`OUTPUT_CAPACITY`] bytes,
//! the vCPU thread (after its exit is handled) and the console's queue
//! thread (before it serves the transmit queue again) wait in
//! [`Output::wait_for_room`], so a guest that prints faster than stdout is
//! read is slowed down and nothing is lost. [`Output::close`] (the VM is
//! stopping) ends every wait. A single burst beyond twice the capacity is
//! dropped and counted, so memory stays bounded whatever the guest does.
//! At exit [`Output::finish`] lets the writer thread drain what is
//! buffered while stdout keeps taking bytes, and gives up after a stretch
//! with no progress, so a stalled stdout delays the exit by at most that
//! stretch.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::timeline::{Phase, Timeline};

/// Bytes buffered before writers wait in [`Output::wait_for_room`]; twice
/// this is the hard limit past which output is dropped.
pub const OUTPUT_CAPACITY: usize = 1 << 20;
/// Most bytes the writer thread takes per `write` call.
const WRITE_CHUNK: usize = 64 * 1024;

#[derive(Debug, Default)]
struct State {
    data: VecDeque<u8>,
    /// The VM stopped: writers never wait again.
    closed: bool,
    /// Bytes dropped: past the hard limit, or because stdout failed.
    dropped: u64,
    /// The writer thread is inside `write` with bytes taken from `data`.
    writing: bool,
    /// Bytes written to the sink so far (progress, for [`Output::finish`]).
    written: u64,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// At or above capacity (a cheap check for the vCPU loop).
    full: AtomicBool,
    /// Signalled when bytes arrive (the writer waits on it) and when bytes
    /// leave or the output closes (writers and `finish` wait on it).
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A bounded console output buffer; clones share it.
#[derive(Debug, Clone)]
pub struct Output {
    shared: Arc<Shared>,
    capacity: usize,
}

impl Output {
    /// An output drained into `sink` by a new thread named `ember-stdout`.
    pub fn spawn(sink: Box<dyn Write + Send>) -> std::io::Result<Output> {
        Self::with_capacity(sink, OUTPUT_CAPACITY)
    }

    /// [`Output::spawn`] with a buffer of `capacity` bytes.
    pub fn with_capacity(
        mut sink: Box<dyn Write + Send>,
        capacity: usize,
    ) -> std::io::Result<Output> {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        // Detached: at exit it may be blocked in `write` on a stdout
        // nobody reads; the process exit ends it.
        std::thread::Builder::new()
            .name("ember-stdout".into())
            .spawn(move || drain(&thread_shared, &mut *sink, capacity))?;
        Ok(Output { shared, capacity })
    }

    /// Appends `buf` without waiting; what lies past twice the capacity is
    /// dropped and counted.
    pub fn write(&self, buf: &[u8]) {
        if buf.is_empty() {
            return;
        }
        let mut state = self.shared.lock();
        let room = (2 * self.capacity).saturating_sub(state.data.len());
        let n = room.min(buf.len());
        state.data.extend(&buf[..n]);
        state.dropped += (buf.len() - n) as u64;
        if state.data.len() >= self.capacity {
            self.shared.full.store(true, Ordering::SeqCst);
        }
        self.shared.changed.notify_all();
    }

    /// True while the buffer holds at least the capacity.
    pub fn is_full(&self) -> bool {
        self.shared.full.load(Ordering::SeqCst)
    }

    /// Waits while the buffer holds at least the capacity and the output
    /// is open. Call it holding no lock.
    pub fn wait_for_room(&self) {
        if !self.is_full() {
            return;
        }
        let mut state = self.shared.lock();
        while state.data.len() >= self.capacity && !state.closed {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The VM is stopping: ends every [`Output::wait_for_room`], now and
    /// later.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
    }

    /// Closes the output and waits until the writer thread has written
    /// everything buffered, giving up once it has made no progress for
    /// `patience`; returns the bytes that never reached the sink.
    pub fn finish(&self, patience: Duration) -> u64 {
        self.close();
        let mut state = self.shared.lock();
        let mut seen = state.written;
        let mut since = Instant::now();
        while !state.data.is_empty() || state.writing {
            if state.written != seen {
                seen = state.written;
                since = Instant::now();
            }
            let Some(left) = patience.checked_sub(since.elapsed()) else {
                return state.dropped + state.data.len() as u64;
            };
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state.dropped
    }
}

/// The writer thread: takes up to [`WRITE_CHUNK`] bytes at a time and
/// writes them with the lock released.
fn drain(shared: &Shared, sink: &mut dyn Write, capacity: usize) {
    crate::signal::block_all_on_this_thread();
    let mut chunk = Vec::with_capacity(WRITE_CHUNK);
    loop {
        {
            let mut state = shared.lock();
            while state.data.is_empty() {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            let n = state.data.len().min(WRITE_CHUNK);
            chunk.clear();
            chunk.extend(state.data.drain(..n));
            state.writing = true;
            shared
                .full
                .store(state.data.len() >= capacity, Ordering::SeqCst);
            shared.changed.notify_all();
        }
        let ok = sink.write_all(&chunk).and_then(|()| sink.flush()).is_ok();
        let mut state = shared.lock();
        state.writing = false;
        if ok {
            state.written += chunk.len() as u64;
        } else {
            // stdout closed: the output has nowhere to go.
            state.dropped += chunk.len() as u64;
        }
        shared.changed.notify_all();
    }
}

/// ember's stdout, fd 1, written directly: no Rust `Stdout` lock that an
/// exit flush could wait on, no buffer.
#[derive(Debug)]
pub struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: writing from a valid buffer of `buf.len()` bytes to fd 1.
        let n = unsafe { libc::write(libc::STDOUT_FILENO, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of console output kept by [`ConsoleTail`].
const CONSOLE_TAIL_BYTES: usize = 16 * 1024;

/// The last 16 KiB of console output, shared between the consoles and the
/// VMM thread (to name a guest panic and to show the last lines when a run
/// fails).
#[derive(Debug, Clone, Default)]
pub struct ConsoleTail(Arc<Mutex<VecDeque<u8>>>);

impl ConsoleTail {
    fn push(&self, buf: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(|p| p.into_inner());
        tail.extend(buf);
        let excess = tail.len().saturating_sub(CONSOLE_TAIL_BYTES);
        tail.drain(..excess);
    }

    /// The kept output as text, `\r` removed.
    pub fn text(&self) -> String {
        let tail = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = tail.iter().copied().filter(|&b| b != b'\r').collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last `n` non-empty lines.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let text = self.text();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }

    /// The lines from the last `Kernel panic` line on, if the guest
    /// kernel panicked.
    pub fn panic_lines(&self) -> Option<Vec<String>> {
        let text = self.text();
        let at = text.rfind("Kernel panic")?;
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        Some(
            text[start..]
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.to_string())
                .collect(),
        )
    }
}

/// A console's output (the UART's or the virtio console's): each guest
/// byte goes to the [`Output`] and is kept in a [`ConsoleTail`]; the first
/// byte marks [`Phase::FirstSerialOutput`] on the timeline.
#[derive(Debug, Clone)]
pub struct ConsoleOut {
    /// Marked at the first byte.
    pub timeline: Timeline,
    /// Keeps the end of the output.
    pub tail: ConsoleTail,
    /// Where the bytes go.
    pub output: Output,
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() {
            self.timeline.mark(Phase::FirstSerialOutput);
        }
        self.tail.push(buf);
        self.output.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes nothing until `open` is set.
    struct Gate(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<u8>>>);

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cvar) = &*self.0;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cvar.wait(open).unwrap();
            }
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    type Opener = Arc<(Mutex<bool>, Condvar)>;

    fn gate() -> (Opener, Arc<Mutex<Vec<u8>>>, Output) {
        let g = Arc::new((Mutex::new(false), Condvar::new()));
        let got = Arc::new(Mutex::new(Vec::new()));
        let out = Output::with_capacity(Box::new(Gate(g.clone(), got.clone())), 16).unwrap();
        (g, got, out)
    }

    #[test]
    fn everything_arrives_when_the_sink_keeps_up() {
        let (g, got, out) = gate();
        *g.0.lock().unwrap() = true;
        g.1.notify_all();
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let o2 = out.clone();
        let d2 = data.clone();
        // As the vCPU loop does: wait for room, then write a little.
        let t = std::thread::spawn(move || {
            for piece in d2.chunks(8) {
                o2.wait_for_room();
                o2.write(piece);
            }
        });
        t.join().unwrap();
        assert_eq!(out.finish(Duration::from_secs(5)), 0);
        assert_eq!(*got.lock().unwrap(), data);
    }

    #[test]
    fn a_full_buffer_back_pressures_until_closed_and_stays_bounded() {
        let (_g, _got, out) = gate();
        out.write(&[7u8; 100]);
        // The writer thread takes a chunk and blocks in the sink; the
        // next write fills the buffer.
        std::thread::sleep(Duration::from_millis(20));
        out.write(&[7u8; 100]);
        assert!(out.is_full());
        let o2 = out.clone();
        let waiter = std::thread::spawn(move || o2.wait_for_room());
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "a writer waits while the buffer is full"
        );
        out.close();
        waiter.join().unwrap();
        out.wait_for_room();
        // The sink never takes a byte: at most one chunk (16) in the
        // writer thread and twice the capacity (32) buffered.
        let t = Instant::now();
        let lost = out.finish(Duration::from_millis(100));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(lost >= 200 - 32, "{lost} bytes lost");
        out.write(&[1u8; 1000]);
        assert!(out.shared.lock().data.len() <= 32, "bounded");
    }

    #[test]
    fn console_tail() {
        let tail = ConsoleTail::default();
        let mut out = ConsoleOut {
            timeline: Timeline::start(),
            tail: tail.clone(),
            output: Output::spawn(Box::new(std::io::sink())).unwrap(),
        };
        for i in 0..5000 {
            write!(out, "line {i}\r\n").unwrap();
        }
        assert_eq!(tail.last_lines(2), ["line 4998", "line 4999"]);
        assert!(tail.text().len() <= CONSOLE_TAIL_BYTES);
        assert_eq!(tail.panic_lines(), None);
        out.write_all(b"[ 1.0] sysrq: Trigger a crash\r\n[ 1.0] Kernel panic - not syncing: sysrq triggered crash\r\n[ 1.0] CPU: 0\r\n").unwrap();
        assert_eq!(
            tail.panic_lines().unwrap(),
            [
                "[ 1.0] Kernel panic - not syncing: sysrq triggered crash",
                "[ 1.0] CPU: 0"
            ]
        );
    }
}
