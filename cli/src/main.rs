//! `bcv`: the command-line face of bcv. A thin user of `bcv-core`: every command here is a few calls into
//! the core's public API, with progress bars for long work and `--json` output for scripts.

mod bench;
mod bench_vfs;
mod container;
mod quickstart;
mod quickstart_streams;
mod streams;

use clap::{Parser, Subcommand};

/// bcv: streams with resource lifetimes, a block-cache SQLite VFS over cloud storage, a Proxy-Wasm host.
#[derive(Parser)]
#[command(name = "bcv", version, about)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The block-cache VFS end to end on a local directory: create a container, upload a database, attach it
    /// in two clients, write and upload in one, poll and see the change in the other.
    Quickstart(quickstart::Args),
    /// Pipe a file through gzip and AES-256-GCM streams and back, verify it, and say what happened.
    QuickstartStreams(quickstart_streams::Args),
    /// Gzip-compress a file through a bcv stream.
    Gzip(streams::FileArgs),
    /// Gzip-decompress a file through a bcv stream (a truncated input is an error, never a short file).
    Gunzip(streams::FileArgs),
    /// Encrypt a file with AES-256-GCM in authenticated chunks.
    Encrypt(streams::KeyedFileArgs),
    /// Decrypt a file made by `bcv encrypt` (a wrong key or tampering is an error; no partial output).
    Decrypt(streams::KeyedFileArgs),
    /// Benchmarks that print figures and ratios against baselines measured in the same run.
    Bench(bench::Args),
    /// Containers and databases of the block-cache VFS.
    #[command(flatten)]
    Container(container::Command),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Quickstart(args) => quickstart::run(args, cli.json),
        Command::QuickstartStreams(args) => quickstart_streams::run(args, cli.json),
        Command::Gzip(args) => streams::run(streams::Op::Gzip, args, None, cli.json),
        Command::Gunzip(args) => streams::run(streams::Op::Gunzip, args, None, cli.json),
        Command::Encrypt(args) => streams::run_keyed(streams::Op::Encrypt, args, cli.json),
        Command::Decrypt(args) => streams::run_keyed(streams::Op::Decrypt, args, cli.json),
        Command::Bench(args) => bench::run(args, cli.json),
        Command::Container(cmd) => container::run(cmd, cli.json),
    };
    if let Err(e) = result {
        eprintln!("bcv: {e:#}");
        std::process::exit(1);
    }
}
