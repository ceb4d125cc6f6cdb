//! Helpers for the tests that run the real `ember` binary: assembling the
//! tiny guest (`resources/tiny-guest/guest.S`) with binutils, checking for
//! KVM, and running ember with a deadline.

#![allow(dead_code)]

pub mod lab;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The ember binary under test.
pub const EMBER: &str = env!("CARGO_BIN_EXE_ember");
/// Longest a tiny-guest run may take (they take milliseconds).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Assembles and links the tiny guest with `MODE=mode` (and the PVH note
/// if `pvh`); returns the ELF path.
pub fn tiny_guest(mode: u32, pvh: bool) -> PathBuf {
    tiny_guest_at(mode, pvh, 0x10_0000)
}

/// [`tiny_guest`] linked at `text` instead of 1 MiB.
pub fn tiny_guest_at(mode: u32, pvh: bool, text: u64) -> PathBuf {
    let defsyms: &[&str] = if pvh { &["PVH=1"] } else { &[] };
    tiny_guest_linked(mode, defsyms, &["-N", &format!("-Ttext={text:#x}")])
}

/// Assembles the tiny guest with `MODE=mode` and `defsyms` (`NAME=VALUE`)
/// and links it with `layout` (ld options placing the code); returns the
/// ELF path.
pub fn tiny_guest_linked(mode: u32, defsyms: &[&str], layout: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("resources/tiny-guest/guest.S");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-guest");
    std::fs::create_dir_all(&dir).unwrap();
    // Tests run in parallel: every build gets its own file names.
    static BUILDS: AtomicUsize = AtomicUsize::new(0);
    let n = BUILDS.fetch_add(1, Ordering::SeqCst);
    let name = format!("guest-{mode}-{}-{n}", std::process::id());
    let obj = dir.join(format!("{name}.o"));
    let elf = dir.join(format!("{name}.elf"));
    let mut asm = Command::new("as");
    asm.args(["--64", "--defsym", &format!("MODE={mode}")]);
    for d in defsyms {
        asm.args(["--defsym", d]);
    }
    let out = asm
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .expect("run `as` (binutils)");
    assert!(
        out.status.success(),
        "as failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("ld")
        .args(["-m", "elf_x86_64", "-e", "_start", "--no-warn-rwx-segments"])
        .args(layout)
        .arg(&obj)
        .arg("-o")
        .arg(&elf)
        .output()
        .expect("run `ld` (binutils)");
    assert!(
        out.status.success(),
        "ld failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elf
}

/// Builds a minimal bzImage around the tiny guest (`MODE=mode`): one
/// setup sector with a boot protocol 2.15 header (64-bit entry flag,
/// `initrd_addr_max`), then the protected-mode kernel whose first 0x200
/// bytes are padding and whose 64-bit entry (+0x200) is the guest.
pub fn tiny_bzimage(mode: u32, initrd_addr_max: u32) -> PathBuf {
    let elf = tiny_guest_at(mode, false, 0x10_0200);
    let bin = elf.with_extension("bin");
    let out = Command::new("objcopy")
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&bin)
        .output()
        .expect("run `objcopy` (binutils)");
    assert!(
        out.status.success(),
        "objcopy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = std::fs::read(&bin).unwrap();
    let mut image = vec![0u8; 2 * 512]; // boot sector + 1 setup sector
    image[0x1f1] = 1; // setup_sects
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    image[0x211] = 0x01; // loadflags: LOADED_HIGH
    image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    image[0x22c..0x230].copy_from_slice(&initrd_addr_max.to_le_bytes());
    image[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    image[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
    image.extend_from_slice(&[0x90; 0x200]); // 32-bit entry area: unused
    image.extend_from_slice(&code);
    let path = elf.with_extension("bzImage");
    std::fs::write(&path, image).unwrap();
    path
}

/// True if KVM tests should run. Panics (fails the test loudly) if
/// `/dev/kvm` is unusable, unless `EMBER_SKIP_KVM_TESTS=1`.
pub fn kvm_available() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("EMBER_SKIP_KVM_TESTS").as_deref() == Ok("1") {
                eprintln!("SKIPPED: /dev/kvm unusable ({e}) and EMBER_SKIP_KVM_TESTS=1");
                false
            } else {
                panic!("/dev/kvm is unusable ({e}); set EMBER_SKIP_KVM_TESTS=1 to skip KVM tests");
            }
        }
    }
}

/// Waits for `child` with [`DEADLINE`], killing it on timeout.
pub fn wait(mut child: Child) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > DEADLINE {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ember did not exit within {DEADLINE:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs ember with `args` and `stdin` bytes (then EOF).
pub fn ember(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(EMBER)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The guest may exit before reading: ignore EPIPE.
    let _ = input.write_all(stdin);
    drop(input);
    wait(child)
}

/// Starts ember with `args`, stdin from /dev/null, stdout and stderr
/// piped.
pub fn spawn_null(args: &[&str]) -> Child {
    Command::new(EMBER)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs ember with `args` and stdin from /dev/null.
pub fn ember_null(args: &[&str]) -> Output {
    wait(spawn_null(args))
}

/// Stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads from `r` until `needle` appears or the deadline passes.
pub fn read_until(r: &mut impl Read, needle: &str) -> String {
    let start = Instant::now();
    let mut acc = Vec::new();
    let mut buf = [0u8; 256];
    while start.elapsed() < DEADLINE {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        acc.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&acc).contains(needle) {
            break;
        }
    }
    String::from_utf8_lossy(&acc).into_owned()
}

/// Builds the boot-timer tiny guest (`resources/tiny-guest/boot-timer.S`)
/// with `resources/tiny-guest/build.sh`; returns the ELF path.
pub fn boot_timer_guest() -> PathBuf {
    static BUILDS: AtomicUsize = AtomicUsize::new(0);
    let n = BUILDS.fetch_add(1, Ordering::SeqCst);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("tiny-guest")
        .join(format!("boot-timer-{}-{n}.elf", std::process::id()));
    let status = Command::new(root.join("resources/tiny-guest/build.sh"))
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("run resources/tiny-guest/build.sh");
    assert!(status.success(), "build.sh failed");
    out
}

/// Runs ember with stdin `/dev/null` and asserts exit status 1 with one
/// line `ember: error: ...` on stderr containing `expect`.
pub fn one_line_error(args: &[&str], expect: &str) {
    let out = ember_null(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout} {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("ember: error: "), "{stderr}");
    assert!(lines[0].contains(expect), "expected {expect:?} in {stderr}");
}

/// A sparse disk image of `size` bytes in the test's temporary directory,
/// named after the test process and `name`.
pub fn temp_disk(name: &str, size: u64) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("disk-{}-{name}.img", std::process::id()));
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    p
}

/// The address of `symbol` in the tiny guest ELF `elf` (from binutils
/// `nm`), e.g. mode 13's `count_loop` and `count_done`.
pub fn guest_symbol(elf: &Path, symbol: &str) -> u64 {
    let out = Command::new("nm")
        .arg(elf)
        .output()
        .expect("run `nm` (binutils)");
    assert!(out.status.success(), "nm {}", elf.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (addr, _kind, name) = (f.next()?, f.next()?, f.next()?);
            (name == symbol).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .unwrap_or_else(|| panic!("no symbol {symbol} in {}", elf.display()))
}
