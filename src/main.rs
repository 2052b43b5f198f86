//! The `coregate` command: `run` starts the proxy from a config file, `check` validates one and
//! prints what it would serve. A bad config exits with status 2 and `file:line:col: message`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG: &str = "config/coregate.toml";

extern "C" {
    /// mimalloc's collection of the calling thread's heap (`force`: purge free pages now).
    fn mi_collect(force: bool);
}

/// Gives the free pages of the calling worker's heap back to the system.
fn release_memory() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { mi_collect(true) }
}

#[derive(Parser)]
#[command(
    name = "coregate",
    version,
    about = "Thread-per-core edge proxy and load balancer for Linux"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy until SIGTERM or SIGINT (then drain in-flight requests and exit 0).
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Begin the graceful shutdown by itself after this long (e.g. "30s"): for scripted
        /// benchmarks and for profilers such as valgrind, which do not deliver signals.
        #[arg(long, value_parser = coregate::config::values::parse_duration)]
        exit_after: Option<std::time::Duration>,
    },
    /// Validate a configuration file and print a summary of what it serves.
    Check {
        /// Configuration file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_thread_names(true)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = coregate::runtime::RELEASE_MEMORY.set(release_memory);
    match cli.command {
        Command::Check { config } => match coregate::config::load(&config) {
            Ok(snapshot) => {
                // A closed stdout (`coregate check | head -1`) is not an error of the config.
                use std::io::Write;
                let text = format!("{}: OK\n{}", config.display(), snapshot.summary());
                let _ = std::io::stdout().write_all(text.as_bytes());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config, exit_after } => {
            let snapshot = match coregate::config::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            init_logging();
            match coregate::runtime::run(snapshot, Some(config), exit_after) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
