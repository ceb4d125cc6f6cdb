//! Terminal handling through a pseudo-terminal: stdin in raw mode while
//! the guest runs (Ctrl-C reaches the guest as a byte), and the settings
//! restored when ember exits, on a guest reset and on SIGTERM.

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use common::*;

fn openpty() -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds into the provided ints; null name,
    // termios and winsize pointers are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    }
}

fn lflag(fd: &OwnedFd) -> libc::tcflag_t {
    // SAFETY: termios is plain data filled by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and termios pointer.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

fn start(slave: &OwnedFd) -> std::process::Child {
    let elf = tiny_guest(3, false);
    Command::new(EMBER)
        .args(["run", "--kernel", elf.to_str().unwrap()])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn raw_mode_passes_ctrl_c_and_is_restored() {
    if !kvm_available() {
        return;
    }
    let (mut master, slave) = openpty();
    let before = lflag(&slave);
    assert_ne!(before & libc::ICANON, 0);
    let mut child = start(&slave);
    let mut stdout = child.stdout.take().unwrap();
    let seen = read_until(&mut stdout, "echo ready");
    assert!(seen.contains("echo ready"), "{seen}");
    let during = lflag(&slave);
    assert_eq!(during & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
    master.write_all(b"a\x03b.").unwrap();
    let rest = read_until(&mut stdout, "bytes: 3");
    let out = wait(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert!(rest.contains("a\x03b"), "{rest:?}");
    assert!(rest.contains("echo done, bytes: 3"), "{rest:?}");
    assert_eq!(lflag(&slave), before);
}

#[test]
fn terminal_restored_after_sigterm() {
    if !kvm_available() {
        return;
    }
    let (_master, slave) = openpty();
    let before = lflag(&slave);
    let mut child = start(&slave);
    let mut stdout = child.stdout.take().unwrap();
    let seen = read_until(&mut stdout, "echo ready");
    assert!(seen.contains("echo ready"), "{seen}");
    assert_eq!(lflag(&slave) & libc::ICANON, 0);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = wait(child);
    assert_eq!(out.status.code(), Some(143));
    assert_eq!(lflag(&slave), before);
}
