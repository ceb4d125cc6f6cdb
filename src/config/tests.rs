//! Config validation: sizes, files, the command line, disks and `root=`.
use super::*;

fn kernel_file() -> PathBuf {
    // Any readable regular file will do for validation.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")
}

#[test]
fn sizes() {
    assert_eq!(parse_size("512M").unwrap(), 512 << 20);
    assert_eq!(parse_size("2G").unwrap(), 2 << 30);
    assert_eq!(parse_size("2g").unwrap(), 2 << 30);
    assert_eq!(parse_size("128").unwrap(), 128 << 20);
    assert_eq!(parse_size("65536K").unwrap(), 64 << 20);
    assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
    assert_eq!(parse_size("16G").unwrap(), 16 << 30);
    for bad in ["", "M", "12X", "-1", "1.5G", "99999999999999999999"] {
        assert!(parse_size(bad).is_err(), "{bad:?} accepted");
    }
    assert!(parse_size("18446744073709551615G").is_err());
}

fn builder() -> VmConfigBuilder {
    VmConfigBuilder::new(kernel_file())
}

#[test]
fn validation() {
    let ok = |mem, cpus| builder().memory(mem).cpus(cpus).build();
    let c = ok(DEFAULT_MEMORY, 1).unwrap();
    assert_eq!(c.cmdline(), DEFAULT_CMDLINE);
    assert!(c.acpi(), "ACPI tables are on by default");
    assert_eq!(c.cpus(), 1);
    assert!(ok(64 << 20, 254).is_ok());
    assert!(ok(16 << 30, 16).is_ok());
    assert!(matches!(ok(63 << 20, 1), Err(Error::MemoryTooSmall { .. })));
    assert!(matches!(ok(2 << 40, 1), Err(Error::MemoryTooLarge { .. })));
    assert!(matches!(
        ok((64 << 20) + 1, 1),
        Err(Error::MemoryUnaligned(_))
    ));
    assert!(matches!(ok(DEFAULT_MEMORY, 0), Err(Error::Cpus { .. })));
    assert!(matches!(ok(DEFAULT_MEMORY, 255), Err(Error::Cpus { .. })));
    assert!(matches!(
        ok(DEFAULT_MEMORY, 1 << 40),
        Err(Error::Cpus { .. })
    ));
    let virtio = builder().console(ConsoleKind::Virtio).build().unwrap();
    assert_eq!(virtio.cmdline(), DEFAULT_CMDLINE_VIRTIO);
}

#[test]
fn bad_files() {
    let r = VmConfigBuilder::new("/nonexistent/vmlinux").build();
    assert!(matches!(r, Err(Error::Unreadable { what: "kernel", .. })));
    let r = VmConfigBuilder::new("/").build();
    assert!(matches!(r, Err(Error::NotAFile { .. })));
    let r = builder().initrd(Some("/nonexistent/initrd".into())).build();
    assert!(matches!(r, Err(Error::Unreadable { what: "initrd", .. })));
}

#[test]
fn cmdline_checked() {
    let long = "x".repeat(layout::CMDLINE_MAX_SIZE + 1);
    let r = builder().cmdline(Some(long)).build();
    assert!(matches!(r, Err(Error::Cmdline(_))));
    let half = "x".repeat(layout::CMDLINE_MAX_SIZE / 2 + 1);
    let r = builder()
        .cmdline(Some(half.clone()))
        .append(Some(half))
        .build();
    assert!(
        matches!(r, Err(Error::Cmdline(_))),
        "the appended part counts"
    );
}

#[test]
fn boot_modes() {
    assert_eq!("pvh".parse::<BootMode>().unwrap(), BootMode::Pvh);
    assert_eq!("linux64".parse::<BootMode>().unwrap(), BootMode::Linux64);
    assert_eq!("auto".parse::<BootMode>().unwrap(), BootMode::Auto);
    assert!("efi".parse::<BootMode>().is_err());
}

#[test]
fn disk_syntax() {
    let d: DiskConfig = "/a.img".parse().unwrap();
    assert_eq!((d.readonly, d.id), (false, None));
    let d: DiskConfig = "/a.img,readonly,id=disk-1".parse().unwrap();
    assert_eq!(d.path, PathBuf::from("/a.img"));
    assert!(d.readonly);
    assert_eq!(d.id.as_deref(), Some("disk-1"));
    let d: DiskConfig = "/a.img,id=x,ro".parse().unwrap();
    assert!(d.readonly);
    for bad in [
        "",
        ",readonly",
        "/a,rw",
        "/a,id=",
        "/a,id=a b",
        "/a,id=123456789012345678901",
    ] {
        assert!(bad.parse::<DiskConfig>().is_err(), "{bad:?} accepted");
    }
    assert_eq!("none".parse::<Root>().unwrap(), Root::None);
    assert_eq!("auto".parse::<Root>().unwrap(), Root::Auto);
    assert_eq!(
        "/dev/vdb".parse::<Root>().unwrap(),
        Root::Device("/dev/vdb".into())
    );
}

#[test]
fn root_on_the_command_line() {
    let img = std::env::temp_dir().join(format!("ember-config-{}.img", std::process::id()));
    std::fs::write(&img, [0u8; 1024]).unwrap();
    let disk = || DiskConfig {
        path: img.clone(),
        readonly: true,
        id: None,
    };
    let base = |cmdline: &str| builder().cmdline(Some(cmdline.into()));
    let c = base("console=ttyS0").disk(disk()).build().unwrap();
    assert_eq!(c.cmdline(), "console=ttyS0 root=/dev/vda rw");
    assert_eq!(c.disks().len(), 1);
    assert_eq!(c.disks()[0].size, 1024);
    let c = base("root=/dev/sda1").disk(disk()).build().unwrap();
    assert_eq!(c.cmdline(), "root=/dev/sda1");
    let c = base("quiet").build().unwrap();
    assert_eq!(c.cmdline(), "quiet");
    let c = base("quiet")
        .disk(disk())
        .disk(disk())
        .root(Root::Device("/dev/vdb".into()))
        .build()
        .unwrap();
    assert_eq!(c.cmdline(), "quiet root=/dev/vdb rw");
    let c = base("quiet").disk(disk()).root(Root::None).build().unwrap();
    assert_eq!(c.cmdline(), "quiet");
    let c = base("quiet")
        .disk(disk())
        .append(Some("ember.cmd=x".into()))
        .build()
        .unwrap();
    assert_eq!(c.cmdline(), "quiet root=/dev/vda rw ember.cmd=x");
    let c = base("root=/dev/sda")
        .disk(disk())
        .root(Root::Device("/dev/vda".into()))
        .build();
    assert!(matches!(c, Err(Error::RootConflict(_))));
    let c = base("").disk(DiskConfig {
        path: "/nonexistent".into(),
        readonly: true,
        id: None,
    });
    assert!(matches!(c.build(), Err(Error::Disk(_))));
    let mut many = base("");
    for _ in 0..=layout::MAX_VIRTIO_DEVICES {
        many = many.disk(disk());
    }
    assert!(matches!(many.build(), Err(Error::TooManyDisks { .. })));
    let _ = std::fs::remove_file(&img);
}
