//! Command-line interface: argument definitions and dispatch to one module
//! per command. Exit status: 0 success, 1 failure, 2 invalid input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod build;
mod check;
mod doctor;
mod launch;
mod list;
mod lock;
mod plan;
mod publish;
mod release;
mod run;
mod show;
mod sources;
mod test;
mod vendor;

#[derive(Debug, Args)]
pub(crate) struct ImdsServeArgs {
    /// The folder holding imds.json (written by the test boot).
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
}

/// Exit status for invalid recipes, images or arguments.
pub(crate) const EXIT_INVALID: u8 = 2;

/// biovm's command line: the options every command takes, and the command
/// to run.
#[derive(Debug, Parser)]
#[command(
    name = "biovm",
    version,
    about = "Build reproducible, boot-tested bioinformatics machine images from declarative recipes",
    long_about = "biovm reads recipes (one per analysis tool, recipes/<category>/<tool>.toml) and image \
definitions (images/<name>.toml), builds bootable disk images with mmdebstrap, and boots every image \
in QEMU to check every tool in it."
)]
pub struct Cli {
    /// The options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The options every command takes, before or after the command's name:
/// the recipe folder, how much to log, and JSON output.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Recipe folder (default: ./recipes, or the `recipes` folder next to the image's folder).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) recipes: Option<PathBuf>,
    /// More log output (-v: info, -vv: debug, including every external command).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Less log output: only errors.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// Machine-readable output on stdout. `list`, `show` and `plan` print
    /// their JSON document; the other commands print one JSON event per
    /// line (stage-started, progress, stage-finished, message, error) and
    /// end with a `result` event holding what they produced.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// The opt-in for input files that name host files outside their own
/// folder; shared by the commands that load images.
#[derive(Debug, Args, Default)]
pub(crate) struct HostPathArgs {
    /// Allow `[[system.files]] source` and test `data` to name files below
    /// DIR (repeatable). Without it they must be inside the image file's
    /// folder, or the recipe's, after symlinks are resolved.
    #[arg(long = "allow-host-path", value_name = "DIR")]
    pub(crate) allow_host_path: Vec<PathBuf>,
}

impl HostPathArgs {
    /// The folders allowed; a missing one is invalid input (exit 2).
    pub(crate) fn access(&self) -> anyhow::Result<crate::config::HostAccess> {
        Ok(crate::config::HostAccess::allowing(&self.allow_host_path)?)
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Validate recipe and image files; report every problem with file, line and column.
    Check(check::CheckArgs),
    /// List the recipes in the catalogue.
    List(list::ListArgs),
    /// Show one recipe in full.
    Show(show::ShowArgs),
    /// Show what an image will install and produce, without building it.
    Plan(plan::PlanArgs),
    /// Check that every host tool biovm needs is installed.
    Doctor(doctor::DoctorArgs),
    /// Pin an image's exact content (every Debian package with version and sha256) in <image>.lock.
    Lock(lock::LockArgs),
    /// Write everything an image's lock names (packages, wheels, downloads) into a folder
    /// that `biovm build --vendor DIR` builds from with no network.
    Vendor(vendor::VendorArgs),
    /// Collect the sources behind an image's lock: the Debian source packages of its
    /// binaries and the PyPI source distributions of its wheels, each checked by sha256.
    Sources(sources::SourcesArgs),
    /// Build an image: bootstrap the root filesystem and assemble the disk.
    Build(build::BuildArgs),
    /// Boot each built disk in QEMU (UEFI and BIOS), unpack each container artifact, and run every tool check inside.
    Test(test::TestArgs),
    /// (Internal) answer one guest connection to the EC2 metadata service
    /// of a test boot, on stdin and stdout; QEMU runs it.
    #[command(hide = true)]
    ImdsServe(ImdsServeArgs),
    /// Boot a built disk locally: the console on this terminal, or detached with SSH on 127.0.0.1.
    Run(run::RunArgs),
    /// Publish a built disk to EC2 or a Eucalyptus-compatible cloud (once: a rerun changes nothing).
    Publish(Box<publish::PublishArgs>),
    /// Start an instance of a published image in EC2, wait until it runs, and print how to connect.
    Launch(Box<launch::LaunchArgs>),
    /// Build each image from its lock, run the whole test matrix and, only if every cell
    /// passed, write the release (artifacts, SBOMs, reports, SHA256SUMS, release.json); --publish uploads it.
    Release(Box<release::ReleaseArgs>),
}

impl Command {
    /// The command's name, as typed.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Check(_) => "check",
            Command::List(_) => "list",
            Command::Show(_) => "show",
            Command::Plan(_) => "plan",
            Command::Doctor(_) => "doctor",
            Command::Lock(_) => "lock",
            Command::Vendor(_) => "vendor",
            Command::Sources(_) => "sources",
            Command::Build(_) => "build",
            Command::Test(_) => "test",
            Command::Publish(_) => "publish",
            Command::Launch(_) => "launch",
            Command::Run(_) => "run",
            Command::Release(_) => "release",
            Command::ImdsServe(_) => "imds-serve",
        }
    }
}

/// Set up progress reporting (bars, plain lines or JSON events) and
/// logging (through the bars on a terminal, so they stay intact).
pub fn init_logging(g: &GlobalArgs) {
    let mode = crate::progress::Mode::detect(g.json, g.quiet);
    crate::progress::init(mode);
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn,biovm=info",
            1 => "info",
            _ => "debug",
        }
    };
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().filter_or("BIOVM_LOG", level));
    b.format_target(false);
    if mode == crate::progress::Mode::Terminal {
        b.target(env_logger::Target::Pipe(Box::new(
            crate::progress::LogWriter,
        )));
    }
    b.init();
}

/// Run the command `cli` names and report how it ended: its own exit
/// status, or after printing the error, 2 for invalid input (recipes,
/// images) and 1 for any other failure.
pub fn run(cli: Cli) -> ExitCode {
    let g = &cli.global;
    let name = cli.command.name();
    let result = match cli.command {
        Command::Check(a) => check::run(g, a),
        Command::List(a) => list::run(g, a),
        Command::Show(a) => show::run(g, a),
        Command::Plan(a) => plan::run(g, a),
        Command::Doctor(a) => doctor::run(g, a),
        Command::Lock(a) => lock::run(g, a),
        Command::Vendor(a) => vendor::run(g, a),
        Command::Sources(a) => sources::run(g, a),
        Command::Build(a) => build::run(g, a),
        Command::Test(a) => test::run(g, a),
        Command::Publish(a) => publish::run(g, *a),
        Command::Run(a) => run::run(g, a),
        Command::ImdsServe(a) => {
            crate::smoke::imds::serve(&a.state, std::io::stdin().lock(), std::io::stdout().lock())
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Launch(a) => launch::run(g, *a),
        Command::Release(a) => release::run(g, *a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            crate::progress::error(name, &format!("{e:#}"));
            report_error(&e)
        }
    }
}

/// Print an error in the one style biovm uses and pick the exit status:
/// invalid input (a `config::Diagnostics`) gives 2, anything else 1.
pub(crate) fn report_error(e: &anyhow::Error) -> ExitCode {
    if let Some(d) = e.downcast_ref::<crate::config::Diagnostics>() {
        eprint!("{d}");
        return ExitCode::from(EXIT_INVALID);
    }
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}
