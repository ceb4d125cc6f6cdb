//! The `ember` command: parses the CLI into a [`ember::VmConfig`], calls
//! [`ember::run`], and maps the result to one line on stderr and an exit
//! status (see [`ember::exit_code`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ember::config::{self, BootMode, VmConfig};

#[derive(Parser, Debug)]
#[command(
    name = "ember",
    about = "A KVM micro virtual machine monitor",
    disable_version_flag = true
)]
struct Cli {
    /// Print the version and the host's KVM flavour.
    #[arg(short = 'V', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a kernel with its console on this terminal.
    Run {
        /// Kernel: ELF vmlinux (PVH entry if it has the note) or bzImage.
        #[arg(long)]
        kernel: PathBuf,
        /// Initial ramdisk.
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// Kernel command line.
        #[arg(long, default_value = config::DEFAULT_CMDLINE)]
        cmdline: String,
        /// Guest memory: 512M, 2G, or a plain number of MiB.
        #[arg(long, default_value = "128M")]
        memory: String,
        /// Number of vCPUs (1-254).
        #[arg(long, default_value_t = 1)]
        cpus: u64,
        /// Entry protocol: auto (PVH if the ELF has the note), pvh, linux64.
        #[arg(long, default_value = "auto")]
        boot_mode: String,
        /// KVM device node.
        #[arg(long, default_value = ember::kvm::KVM_PATH)]
        kvm_device: PathBuf,
        /// virtio-block disk PATH[,readonly][,id=NAME]; repeat for more
        /// disks: /dev/vda, /dev/vdb, ... in order.
        #[arg(long = "disk", value_name = "PATH[,readonly][,id=NAME]")]
        disks: Vec<String>,
        /// Root device added to the command line as `root=DEV rw`. Default
        /// (auto): /dev/vda when a disk is given and the command line has
        /// no root=; `none` adds nothing.
        #[arg(long, value_name = "DEV|auto|none", default_value = "auto")]
        root: String,
    },
}

/// One line: the error and its sources, joined by ": ".
fn error_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    // linux-loader prefixes each of its messages with "Kernel Loader: ".
    line.replace('\n', " ").replace("Kernel Loader: ", "")
}

fn fail(err: &dyn std::error::Error) -> ExitCode {
    eprintln!("ember: error: {}", error_line(err));
    ExitCode::from(ember::EXIT_ERROR)
}

struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "ember: [{}] {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn init_logging() {
    let level = std::env::var("EMBER_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    let logger: &'static StderrLogger = Box::leak(Box::new(StderrLogger(level)));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

fn main() -> ExitCode {
    init_logging();
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("?");
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        eprintln!("ember: error: internal bug: thread {name} panicked at {at}: {msg}");
    }));

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's message spans lines (the problem, then the argument and
            // a usage block); keep what precedes the usage, on one line.
            let text = e.to_string();
            let words: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                .flat_map(str::split_whitespace)
                .collect();
            let line = words.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("ember: error: {line} (see `ember help`)");
            return ExitCode::from(ember::EXIT_ERROR);
        }
    };
    if cli.version {
        println!("ember {}", env!("CARGO_PKG_VERSION"));
        println!("host KVM: {}", ember::kvm::flavour());
        return ExitCode::SUCCESS;
    }
    let Some(Command::Run {
        kernel,
        initrd,
        cmdline,
        memory,
        cpus,
        boot_mode,
        kvm_device,
        disks,
        root,
    }) = cli.command
    else {
        eprintln!("ember: error: no command given (see `ember help`)");
        return ExitCode::from(ember::EXIT_ERROR);
    };
    let config = match config::parse_size(&memory)
        .and_then(|mem| Ok((mem, boot_mode.parse::<BootMode>()?)))
        .and_then(|(mem, mode)| VmConfig::new(kernel, initrd, Some(cmdline), mem, cpus, mode))
    {
        Ok(c) => VmConfig { kvm_device, ..c },
        Err(e) => return fail(&e),
    };
    let config = match disks
        .iter()
        .map(|d| d.parse::<config::DiskConfig>())
        .collect::<Result<Vec<_>, _>>()
        .and_then(|disks| config.with_disks(disks, root.parse()?))
    {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match ember::run(&config) {
        Ok(reason) => {
            let code = ember::exit_code(&reason);
            if !reason.is_clean() {
                eprintln!("ember: error: {reason}");
            }
            ExitCode::from(code)
        }
        Err(e) => fail(&e),
    }
}
