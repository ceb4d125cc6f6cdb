//! COM1: a vm-superio 16550 UART whose output goes to stdout and whose
//! input comes from the event loop (stdin, unless `--console virtio` sends
//! it to the virtio console). Its interrupt is an eventfd registered as an
//! irqfd on IOAPIC pin 4. [`ConsoleOut`] and [`ConsoleTail`] serve the
//! virtio console's output too.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::serial::SerialEvents;
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;
use super::EventFdTrigger;
use crate::timeline::{Phase, Timeline};

/// Serial events: tells the event loop when the guest has drained the
/// receive FIFO so that more input can be queued.
#[derive(Debug)]
pub struct RxEvents {
    rx_ready: EventFd,
}

impl SerialEvents for RxEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        if let Err(e) = self.rx_ready.write(1) {
            log::debug!("serial: cannot signal rx ready: {e}");
        }
    }
}

/// The UART with its output sink.
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, RxEvents, Box<dyn Write + Send>>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART raising `irq` on interrupts, writing to `out`, and writing
    /// `rx_ready` when its receive FIFO empties.
    pub fn new(irq: EventFd, rx_ready: EventFd, out: Box<dyn Write + Send>) -> Self {
        SerialDevice {
            uart: Serial::with_events(EventFdTrigger(irq), RxEvents { rx_ready }, out),
        }
    }

    /// Queues as many `bytes` as the receive FIFO takes; returns how many.
    pub fn enqueue(&mut self, bytes: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(bytes.len());
        if room == 0 {
            return 0;
        }
        match self.uart.enqueue_raw_bytes(&bytes[..room]) {
            Ok(n) => n,
            Err(e) => {
                log::debug!("serial: cannot queue input: {e:?}");
                0
            }
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(offset)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(offset);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(value), Ok(offset)) = (data.first(), u8::try_from(offset)) {
            if let Err(e) = self.uart.write(offset, *value) {
                log::debug!("serial: write failed: {e:?}");
            }
        }
    }
}

/// Bytes of console output kept by [`ConsoleTail`].
const CONSOLE_TAIL_BYTES: usize = 16 * 1024;

/// The last 16 KiB of console output, shared between the
/// serial device and the VMM thread (to name a guest panic and to show the
/// last lines when a run fails).
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

/// Unbuffered stdout for the console (the UART's or the virtio console's
/// output): each guest byte is written through
/// and kept in a [`ConsoleTail`]. The first byte marks
/// [`Phase::FirstSerialOutput`] on the timeline.
#[derive(Debug)]
pub struct ConsoleOut {
    /// Marked at the first byte.
    pub timeline: Timeline,
    /// Keeps the end of the output.
    pub tail: ConsoleTail,
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() {
            self.timeline.mark(Phase::FirstSerialOutput);
        }
        self.tail.push(buf);
        let mut out = std::io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().lock().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_tail() {
        let tail = ConsoleTail::default();
        let mut out = ConsoleOut {
            timeline: Timeline::start(),
            tail: tail.clone(),
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

    type Sink = crate::devices::TestSink;

    fn device() -> (SerialDevice, Sink, EventFd, EventFd) {
        let sink = Sink::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let rx = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = SerialDevice::new(
            irq.try_clone().unwrap(),
            rx.try_clone().unwrap(),
            Box::new(sink.clone()),
        );
        (dev, sink, irq, rx)
    }

    #[test]
    fn output_and_input() {
        let (mut dev, sink, irq, rx) = device();
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        // Enable the receive interrupt (IER bit 0), then queue input.
        dev.write(1, &[1]);
        assert_eq!(dev.enqueue(b"ab"), 2);
        assert_eq!(irq.read().unwrap(), 1);
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1); // data ready
        let mut c = [0u8];
        dev.read(0, &mut c);
        assert_eq!(c, [b'a']);
        dev.read(0, &mut c);
        assert_eq!(c, [b'b']);
        assert_eq!(rx.read().unwrap(), 1); // FIFO drained
    }

    #[test]
    fn fifo_limit() {
        let (mut dev, ..) = device();
        let big = [b'x'; 100];
        assert_eq!(dev.enqueue(&big), 64);
        assert_eq!(dev.enqueue(&big), 0);
    }
}
