//! The command-line front end: parses `ember`'s arguments with clap into a
//! [`VmConfigBuilder`] (the one way into a validated [`crate::VmConfig`]),
//! runs the VM ([`crate::run`]) and maps the result to lines on stderr
//! and an exit status ([`crate::exit_code`]). `main.rs` only calls
//! [`main`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::bench;
use crate::config::{self, BootMode, ConsoleKind, VmConfigBuilder};
use crate::share::{Share, ShareConfig};
use crate::timeline::{self, Phase, ReportExtra, Timeline};
use crate::StopReason;

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
    Run(RunArgs),
    /// Boot a guest N times (each in a child `ember run --boot-timer=json`)
    /// and print min, median, p90 and max of each boot phase, peak RSS and
    /// the VMM's overhead.
    Bench {
        /// Measured runs.
        #[arg(short = 'n', long = "runs", default_value_t = 20)]
        runs: usize,
        /// Unmeasured runs first.
        #[arg(long, default_value_t = 2)]
        warmups: usize,
        /// One JSON object on stdout instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        vm: RunArgs,
    },
}

/// `--boot-timer` output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BootTimerFormat {
    /// A table on stderr.
    Text,
    /// One JSON object on one line on stderr.
    Json,
}

/// What boots: shared by `run` and `bench`.
#[derive(Args, Debug)]
struct RunArgs {
    /// Kernel: ELF vmlinux (PVH entry if it has the note) or bzImage.
    /// Optional with a command: the default guest
    /// ($XDG_CACHE_HOME/ember/default-guest, made by
    /// resources/guest/build.sh).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line [default: console=ttyS0 reboot=k panic=-1,
    /// console=hvc0 with --console virtio, plus `loglevel=3` with a
    /// command].
    #[arg(long)]
    cmdline: Option<String>,
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
    #[arg(long, default_value = crate::kvm::KVM_PATH)]
    kvm_device: PathBuf,
    /// Add the legacy i8254 PIT (KVM's in-kernel one), for kernels without
    /// kvmclock that calibrate their clocks against it.
    #[arg(long)]
    pit: bool,
    /// Do not write the ACPI tables (the MP table stays); the guest then
    /// powers off by halting and must reboot through the i8042.
    #[arg(long)]
    no_acpi: bool,
    /// virtio-block disk PATH[,readonly][,id=NAME]; repeat for more
    /// disks: /dev/vda, /dev/vdb, ... in order.
    #[arg(long = "disk", value_name = "PATH[,readonly][,id=NAME]")]
    disks: Vec<String>,
    /// The guest's console, where stdin goes: serial (COM1, ttyS0) or
    /// virtio (a virtio-console device, hvc0, in the virtio-mmio slot
    /// after the disks; the UART's output still reaches stdout, its input
    /// gets nothing).
    #[arg(long, value_name = "serial|virtio", default_value = "serial")]
    console: String,
    /// Root device added to the command line as `root=DEV rw`. Default
    /// (auto): /dev/vda when a disk is given and the command line has
    /// no root=; `none` adds nothing.
    #[arg(long, value_name = "DEV|auto|none", default_value = "auto")]
    root: String,
    /// Print the boot timeline (ms since main) on stderr at exit;
    /// `--boot-timer=json` prints one JSON object instead.
    #[arg(
        long,
        value_name = "FORMAT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "text"
    )]
    boot_timer: Option<BootTimerFormat>,
    /// Host directory for the command, mounted at /mnt/share (its
    /// working directory) from an ext4 image on the last disk; `,rw`
    /// copies the guest's changes back after it reports its status.
    #[arg(long, value_name = "DIR[,rw]")]
    share: Option<String>,
    /// Stop the VM after SECS seconds: exit status 124.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Stop the VM if the guest has not reported booting (port 0xf5;
    /// the default guest's init does before running CMD) after SECS
    /// seconds: exit status 121.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    boot_timeout: Option<u64>,
    /// Command to run in the guest (`ember run [OPTIONS] -- CMD
    /// [ARGS...]`); its exit status becomes ember's (see docs/RUN.md).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Errors of the command line itself.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// Neither `--kernel` nor a command.
    #[error("--kernel is required unless a command follows `--` (see `ember help`)")]
    NoKernel,
    /// `--share` without a command.
    #[error("--share needs a command after `--` (see `ember help`)")]
    ShareWithoutCommand,
}

impl RunArgs {
    /// The arguments of `ember run` that boot the same VM.
    fn to_run_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["run".into()];
        if let Some(kernel) = &self.kernel {
            a.extend(["--kernel".into(), kernel.clone().into()]);
        }
        if let Some(initrd) = &self.initrd {
            a.extend(["--initrd".into(), initrd.clone().into()]);
        }
        if let Some(cmdline) = &self.cmdline {
            a.extend(["--cmdline".into(), cmdline.into()]);
        }
        for (flag, value) in [
            ("--memory", self.memory.clone()),
            ("--cpus", self.cpus.to_string()),
            ("--boot-mode", self.boot_mode.clone()),
            ("--console", self.console.clone()),
            ("--root", self.root.clone()),
        ] {
            a.extend([flag.into(), value.into()]);
        }
        a.extend(["--kvm-device".into(), self.kvm_device.clone().into()]);
        if self.pit {
            a.push("--pit".into());
        }
        if self.no_acpi {
            a.push("--no-acpi".into());
        }
        for d in &self.disks {
            a.extend(["--disk".into(), d.into()]);
        }
        a
    }

    /// True when a command follows `--`.
    fn command_mode(&self) -> bool {
        !self.command.is_empty()
    }

    /// The configuration's inputs; with a command, the default guest when
    /// no `--kernel` is given (the command itself and `--share` are added
    /// by [`with_command`]).
    fn builder(&self) -> Result<VmConfigBuilder, Box<dyn std::error::Error>> {
        let (kernel, initrd) = match (&self.kernel, self.command_mode()) {
            (Some(k), _) => (k.clone(), self.initrd.clone()),
            (None, true) => {
                let (k, i) = crate::command::default_guest()?;
                (k, self.initrd.clone().or(Some(i)))
            }
            (None, false) => return Err(CliError::NoKernel.into()),
        };
        let console = self.console.parse::<ConsoleKind>()?;
        let cmdline = self.cmdline.clone().or_else(|| {
            self.command_mode().then(|| {
                format!(
                    "{} {}",
                    console.default_cmdline(),
                    crate::command::COMMAND_CMDLINE_EXTRA
                )
            })
        });
        let mut b = VmConfigBuilder::new(kernel)
            .initrd(initrd)
            .cmdline(cmdline)
            .memory(config::parse_size(&self.memory)?)
            .cpus(self.cpus)
            .boot_mode(self.boot_mode.parse::<BootMode>()?)
            .kvm_device(self.kvm_device.clone())
            .console(console)
            .root(self.root.parse()?)
            .timeout(self.timeout.map(Duration::from_secs))
            .boot_timeout(self.boot_timeout.map(Duration::from_secs))
            .pit(self.pit)
            .acpi(!self.no_acpi);
        for d in &self.disks {
            b = b.disk(d.parse::<config::DiskConfig>()?);
        }
        Ok(b)
    }
}

/// Command mode: builds the `--share` image and attaches it as the last
/// disk, and appends the command to the kernel command line.
fn with_command(
    builder: VmConfigBuilder,
    args: &RunArgs,
) -> Result<(VmConfigBuilder, Option<Share>), Box<dyn std::error::Error>> {
    if !args.command_mode() {
        return match args.share {
            Some(_) => Err(CliError::ShareWithoutCommand.into()),
            None => Ok((builder, None)),
        };
    }
    let mut builder = builder;
    let share = match &args.share {
        Some(s) => {
            if builder.disk_count() >= builder.max_disks() {
                return Err(config::Error::TooManyDisks {
                    got: builder.disk_count() + 1,
                    max: builder.max_disks(),
                }
                .into());
            }
            Some(Share::create(s.parse::<ShareConfig>()?)?)
        }
        None => None,
    };
    let mut share_dev = None;
    if let Some(s) = &share {
        builder = builder.disk(config::DiskConfig {
            path: s.image().to_path_buf(),
            readonly: false,
            id: Some("ember-share".into()),
        });
        share_dev = Some(crate::command::disk_device(builder.disk_count() - 1));
    }
    let words = crate::command::cmdline_with("", &args.command, share_dev.as_deref())?;
    Ok((builder.append(Some(words)), share))
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
    fail_as(err, false)
}

/// [`fail`] with the status for command mode when `command` is true.
fn fail_as(err: &dyn std::error::Error, command: bool) -> ExitCode {
    eprintln!("ember: error: {}", error_line(err));
    ExitCode::from(crate::error_code(command))
}

/// Lines of console output shown on stderr when a command's run fails.
const FAILURE_CONSOLE_LINES: usize = 20;

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

/// The `ember` program: everything `main.rs` does.
pub fn main() -> ExitCode {
    // The timeline's origin: the earliest point of main (see crate::timeline).
    let timeline = Timeline::start();
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
            let command = std::env::args_os().any(|a| a == "--");
            return ExitCode::from(crate::error_code(command));
        }
    };
    if cli.version {
        println!("ember {}", env!("CARGO_PKG_VERSION"));
        println!("host KVM: {}", crate::kvm::flavour());
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::Run(args)) => run(&args, &timeline),
        Some(Command::Bench {
            runs,
            warmups,
            json,
            vm,
        }) => {
            if let Err(e) = vm.builder().and_then(|b| Ok(b.build()?)) {
                return fail(&*e);
            }
            let exe = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => return fail(&e),
            };
            let plan = bench::Plan {
                exe,
                args: vm.to_run_args(),
                runs,
                warmups,
                guest_memory_kib: config::parse_size(&vm.memory).unwrap_or(0) / 1024,
            };
            match bench::run(&plan) {
                Ok(report) => {
                    if json {
                        println!("{}", report.to_json(&plan));
                    } else {
                        print!("{}", report.to_table(&plan));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        None => {
            eprintln!("ember: error: no command given (see `ember help`)");
            ExitCode::from(crate::EXIT_ERROR)
        }
    }
}

/// `ember run`: boots the VM, prints the boot timeline if asked.
fn run(args: &RunArgs, timeline: &Timeline) -> ExitCode {
    let cmd_mode = args.command_mode();
    let built = args
        .builder()
        .and_then(|b| with_command(b, args))
        .and_then(|(b, share)| Ok((b.build()?, share)));
    let (config, share) = match built {
        Ok(c) => c,
        Err(e) => return fail_as(&*e, cmd_mode),
    };
    timeline.mark(Phase::ArgsParsed);
    let result = crate::run(&config, timeline);
    let (code, stop) = match result {
        Ok(outcome) => (
            report(&outcome, cmd_mode, share.as_ref()),
            outcome.reason.to_string(),
        ),
        Err(e) => (fail_as(&e, cmd_mode), format!("error: {}", error_line(&e))),
    };
    timeline.mark(Phase::ProcessExit);
    if let Some(format) = args.boot_timer {
        let extra = ReportExtra {
            stop,
            guest_memory_kib: config.memory() / 1024,
            peak_rss_kib: timeline::peak_rss_kib(),
        };
        match format {
            BootTimerFormat::Text => eprint!("{}", timeline.to_text(&extra)),
            BootTimerFormat::Json => eprintln!("{}", timeline.to_json(&extra)),
        }
    }
    code
}

/// The stderr lines and exit status for a finished run; copies a
/// `--share DIR,rw` back after the guest reported its status.
fn report(outcome: &crate::Outcome, cmd_mode: bool, share: Option<&Share>) -> ExitCode {
    let reason = &outcome.reason;
    let mut code = crate::exit_code(reason, cmd_mode);
    if outcome.dropped_output > 0 {
        eprintln!(
            "ember: warning: {} bytes of console output were dropped: stdout was not being read",
            outcome.dropped_output
        );
    }
    if !outcome.stuck.is_empty() {
        if code == 0 {
            code = crate::error_code(cmd_mode).max(crate::EXIT_VM_FAILURE);
        }
        eprintln!(
            "ember: error: {} did not stop within {:?} after the VM stopped ({reason}); exiting without {} (exit status {code})",
            outcome.stuck.join(", "),
            crate::vm::STOP_DEADLINE,
            if outcome.stuck.len() == 1 { "it" } else { "them" },
        );
    }
    let echo = |lines: Vec<String>| {
        for l in lines {
            eprintln!("ember: | {l}");
        }
    };
    match reason {
        StopReason::GuestExit(_) => {
            if let Some(s) = share.filter(|s| s.rw()) {
                if let Err(e) = s.copy_back() {
                    return fail_as(&e, cmd_mode);
                }
            }
        }
        StopReason::GuestPanic => {
            eprintln!("ember: error: guest kernel panic (exit status {code}); its panic lines:");
            echo(outcome.console.panic_lines().unwrap_or_default());
        }
        StopReason::GuestReset | StopReason::TripleFault | StopReason::GuestPowerOff
            if cmd_mode =>
        {
            eprintln!(
                "ember: error: {reason} before the command reported an exit status \
                 (exit status {code}); last console lines:"
            );
            echo(outcome.console.last_lines(FAILURE_CONSOLE_LINES));
        }
        r if !r.is_clean() => {
            eprintln!("ember: error: {reason} (exit status {code})");
            let lines = outcome.console.last_lines(FAILURE_CONSOLE_LINES);
            if cmd_mode && !lines.is_empty() {
                eprintln!("ember: last console lines:");
                echo(lines);
            }
        }
        _ => {}
    }
    ExitCode::from(code)
}
