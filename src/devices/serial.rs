//! COM1: a vm-superio 16550 UART whose output goes to a
//! [`super::output::ConsoleOut`] (stdout, through a bounded buffer) and
//! whose input comes from the event loop (stdin, unless `--console virtio`
//! sends it to the virtio console). Its interrupt is an eventfd registered
//! as an irqfd on IOAPIC pin 4.

use std::io::Write;

use vm_superio::serial::SerialEvents;
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;
use super::EventFdTrigger;

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

#[cfg(test)]
mod tests {
    use super::*;

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
