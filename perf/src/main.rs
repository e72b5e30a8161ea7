//! The `ferrox-perf` command line; see `ferrox-perf --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser};
use ferrox_perf::bench::{self, Session, SessionOptions};
use ferrox_perf::compare::Comparison;
use ferrox_perf::parse::{self, TargetSpec};
use ferrox_perf::plan::Workload;
use ferrox_perf::report::Report;
use ferrox_perf::target::{self, HostSettings, OpenOptions};
use ferrox_perf::Error;
use ferrox_reactor::PollMode;

const ABOUT: &str =
    "Benchmark a Ferrox (or any NVMe/TCP) target, a file or block device, or a RAM disk";

/// The size rule, in every `--help` (sizes: `ferrox_bdev::size`).
macro_rules! sizes {
    () => {
        "\
Sizes (SIZE, --bs, --range, --align, --spawn-size) are bytes or take binary units, any
case: 4k = 4KiB = 4096, 1g = 1GiB, 1.5GiB. Decimal units (kB, MB, GB, TB: powers of
1000) are refused, because ferrox-perf read them as binary before: write 4KiB or 4k."
    };
}

const LONG_ABOUT: &str = concat!(
    "\
Benchmark a block target from pinned reactors, one per --cores entry, each with its own
channel (queue pair) keeping --qd requests in flight. Reports IOPS, MiB/s, latency
(mean, p50, p90, p99, p99.9, p99.99, max) per core and in total, and the CPU seconds the
tool used.

TARGET is one of:
  nvme+tcp://ADDR:PORT/NQN[?nsid=N]   an NVMe/TCP namespace (default: the first one)
  pcie://DOMAIN:BUS:DEV.FN[?nsid=N]   a local NVMe controller bound to vfio-pci, through
                                      Ferrox's user-space driver (default: the first one)
  malloc:SIZE                         an in-process RAM disk (the network-free ceiling)
  PATH                                a file or block device (io_uring, O_DIRECT)
or use --spawn-target to start an in-process Ferrox target serving a RAM disk on
127.0.0.1 and benchmark it over nvme+tcp.

",
    sizes!(),
    "

--verify writes a header (sector, generation, run seed) and data derived from it in
every 512 bytes, checks every byte on every read, and holds each read to the last write
acknowledged on its blocks (so a lost write is caught). The range is first filled by a
write pass (so every block carries this run's data); a write-only workload is read back
at the end. With several cores, each one's random requests stay in its own slice of the
range. A mismatch is reported with its LBA and makes the exit status 1.

Exit status: 0 done, 1 the run failed (verify mismatch, I/O error, target trouble),
2 bad input.

`ferrox-perf compare A B [--rounds N] [workload flags]` runs two targets alternately
(A B A B ...) and prints each figure's min / median / max and the A/B ratio pair by pair."
);

const EXAMPLES: &str = "\
Examples:
  ferrox-perf malloc:1GiB --rw randread --bs 4k --qd 32 --time 5
  ferrox-perf --spawn-target --cores 0,1 --time 10
  ferrox-perf nvme+tcp://127.0.0.1:4420/nqn.2026-11.io.ferrox:default --rw randrw --mix 70 --qd 64
  ferrox-perf /var/lib/ferrox/disk0.img --rw write --bs 128k --qd 8 --json
  ferrox-perf pcie://0000:00:04.0 --rw randread --bs 4k --qd 32 --time 5
  ferrox-perf malloc:256MiB --rw randrw --verify --time 10
  ferrox-perf malloc:1GiB --dist zipf:1.2 --range 50% --plot lat.svg
  ferrox-perf compare malloc:1GiB nvme+tcp://10.0.0.2:4420/nqn.2026-11.io.ferrox:vol1 --rounds 5";

/// Workload flags shared by a run and `compare`.
#[derive(Debug, Args)]
struct WorkArgs {
    /// Access pattern: read, write, randread, randwrite or randrw
    #[arg(long, default_value = "randread", value_name = "PATTERN")]
    rw: String,
    /// Read percentage of randrw
    #[arg(long, default_value = "70", value_name = "PERCENT")]
    mix: String,
    /// Request size, a multiple of the device block size (4k, 128k, ...)
    #[arg(long, default_value = "4k", value_name = "SIZE")]
    bs: String,
    /// Requests in flight per core
    #[arg(long, default_value = "32", value_name = "N")]
    qd: String,
    /// Measured seconds [default: 10]
    #[arg(long, value_name = "SECONDS", conflicts_with = "ios")]
    time: Option<String>,
    /// Measured requests in total (instead of --time)
    #[arg(long, value_name = "N")]
    ios: Option<String>,
    /// Seconds of unmeasured warm-up before measuring
    #[arg(long, default_value = "0", value_name = "SECONDS")]
    ramp: String,
    /// Cores to run reactors on: 0,1 or 0-3 or 0x3 [default: the last available core]
    #[arg(long, value_name = "LIST")]
    cores: Option<String>,
    /// Part of the device to use, from its start: bytes (8GiB) or a percentage (50%)
    #[arg(long, value_name = "SIZE|PERCENT")]
    range: Option<String>,
    /// Granularity of random offsets [default: --bs]
    #[arg(long, value_name = "SIZE")]
    align: Option<String>,
    /// Random offset distribution: uniform or zipf:THETA (e.g. zipf:1.2)
    #[arg(long, default_value = "uniform", value_name = "DIST")]
    dist: String,
    /// Write checkable data and check every read, byte for byte (see above)
    #[arg(long)]
    verify: bool,
    /// Seed of offsets and verify headers [default: random]
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Logical block size of malloc and file targets
    #[arg(long, default_value = "512", value_name = "BYTES")]
    block_size: u32,
    /// Reactor polling: busy (lowest latency) or adaptive (parks when idle)
    #[arg(long, default_value = "busy", value_name = "MODE")]
    poll_mode: String,
    /// Host NQN for nvme+tcp targets [default: the host library's]
    #[arg(long, value_name = "NQN")]
    hostnqn: Option<String>,
    /// Ask nvme+tcp targets for header digests (CRC32C)
    #[arg(long)]
    header_digest: bool,
    /// Ask nvme+tcp targets for data digests (CRC32C)
    #[arg(long)]
    data_digest: bool,
    /// Keep SQ flow control on nvme+tcp queues (by default it is disabled, so a read
    /// ends with its data PDU, without a response capsule)
    #[arg(long)]
    sq_flow_control: bool,
    /// Print the report as JSON (stable field names) instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Parser)]
#[command(name = "ferrox-perf", about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
struct RunCli {
    /// nvme+tcp://ADDR:PORT/NQN[?nsid=N], pcie://BDF[?nsid=N], malloc:SIZE, or a file or block device
    #[arg(value_name = "TARGET", required_unless_present = "spawn_target")]
    target: Option<String>,
    /// Start an in-process Ferrox target (RAM disk on 127.0.0.1) and benchmark it over nvme+tcp
    #[arg(long, conflicts_with = "target")]
    spawn_target: bool,
    /// Size of the --spawn-target RAM disk
    #[arg(long, default_value = "1GiB", value_name = "SIZE")]
    spawn_size: String,
    /// Draw the latency distribution and IOPS over time to this SVG file
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    work: WorkArgs,
}

#[derive(Debug, Parser)]
#[command(
    name = "ferrox-perf compare",
    about = "Run two targets alternately (A B A B ...) and compare their figures",
    after_help = "Example:\n  ferrox-perf compare malloc:1GiB /dev/nvme1n1 --rw randread --time 5 --rounds 5",
    after_long_help = concat!(
        "Example:\n  ferrox-perf compare malloc:1GiB /dev/nvme1n1 --rw randread --time 5 --rounds 5\n\n",
        sizes!()
    )
)]
struct CompareCli {
    /// First target (the numerator of the ratios)
    a: String,
    /// Second target
    b: String,
    /// Runs of each target
    #[arg(long, default_value = "3", value_name = "N")]
    rounds: usize,
    #[command(flatten)]
    work: WorkArgs,
}

/// Parses with clap; `--help` exits 0, mistakes print one line and exit 2.
fn parse_cli<T: Parser>(args: &[String]) -> T {
    let matches = T::command().try_get_matches_from(args);
    match matches.and_then(|m| T::from_arg_matches(&m)) {
        Ok(t) => t,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            // clap's message may span lines ("required arguments: <A>"); keep its
            // first paragraph, on one line.
            let text = e.to_string();
            let first = text.split("\n\n").next().unwrap_or("bad arguments");
            let line: Vec<&str> = first.lines().map(str::trim).collect();
            eprintln!(
                "ferrox-perf: {} (see --help)",
                line.join(" ").trim_start_matches("error: ")
            );
            std::process::exit(2);
        }
    }
}

struct Settings {
    workload: Workload,
    session: SessionOptions,
    open: OpenOptions,
    json: bool,
}

fn settings(a: &WorkArgs) -> Result<Settings, Error> {
    let rw = parse::Rw::parse(&a.rw)?;
    let qd: u32 =
        a.qd.parse()
            .ok()
            .filter(|&q| (1..=4096).contains(&q))
            .ok_or_else(|| Error::usage(format!("--qd {:?}: expected 1 to 4096", a.qd)))?;
    let seed = a.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ (u64::from(std::process::id()) << 32)
    });
    let workload = Workload {
        rw,
        mix: parse::parse_mix(&a.mix)?,
        bs: parse::parse_size(&a.bs)?,
        qd,
        time: match &a.time {
            Some(t) => Some(parse::parse_seconds(t)?),
            None if a.ios.is_none() => Some(ferrox_perf::plan::DEFAULT_SECONDS),
            None => None,
        },
        ios: a
            .ios
            .as_deref()
            .map(|n| {
                n.parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| Error::usage(format!("--ios {n:?}: expected a count >= 1")))
            })
            .transpose()?,
        ramp: parse::parse_seconds(&a.ramp)?,
        range: a.range.as_deref().map(parse::parse_range).transpose()?,
        align: a.align.as_deref().map(parse::parse_size).transpose()?,
        dist: parse::parse_dist(&a.dist)?,
        verify: a.verify,
        seed,
    };
    let cores = match &a.cores {
        Some(c) => {
            ferrox_reactor::parse_cores(c).map_err(|e| Error::usage(format!("--cores: {e}")))?
        }
        None => vec![*ferrox_reactor::available_cores().last().unwrap_or(&0)],
    };
    let avail = ferrox_reactor::available_cores();
    if let Some(c) = cores.iter().find(|c| !avail.contains(c)) {
        return Err(Error::usage(format!(
            "--cores: CPU {c} does not exist or is not allowed (available: {avail:?})"
        )));
    }
    if ferrox_bdev::validate_block_size("--block-size", a.block_size).is_err() {
        return Err(Error::usage(format!(
            "--block-size {}: expected a power of two from 512 to 65536",
            a.block_size
        )));
    }
    let poll_mode: PollMode = a.poll_mode.parse().map_err(Error::usage)?;
    Ok(Settings {
        session: SessionOptions {
            cores,
            poll_mode,
            max_bs: workload.bs.max(u64::from(a.block_size)),
            max_qd: qd,
        },
        open: OpenOptions {
            block_size: a.block_size,
            queue_depth: qd,
            host: HostSettings {
                hostnqn: a.hostnqn.clone().unwrap_or_default(),
                header_digest: a.header_digest,
                data_digest: a.data_digest,
                kato_ms: None,
                io_timeout: None,
                keep_sq_flow_control: a.sq_flow_control,
            },
            poll_mode,
        },
        workload,
        json: a.json,
    })
}

fn run(cli: RunCli) -> Result<bool, Error> {
    let st = settings(&cli.work)?;
    let spec = cli.target.as_deref().map(parse::parse_target).transpose()?;
    let spawn_size = parse::parse_size(&cli.spawn_size)?;
    let session = Session::start(&st.session)?;
    let opened = match &spec {
        Some(spec) => target::open(&session, spec, "perf0", &st.open)?,
        None => target::spawn(&session, spawn_size, &st.open)?,
    };
    let r = report_run(&cli, &st, &session, &opened);
    drop(session); // stop the reactors (and a spawned target's connections) first
    drop(opened); // then a pcie:// controller may shut down
    r
}

fn report_run(
    cli: &RunCli,
    st: &Settings,
    session: &Session,
    opened: &target::Opened,
) -> Result<bool, Error> {
    let outcome = bench::run(session, &opened.dev, &st.workload, !st.json, None)?;
    let report = Report::new(&opened.label, &st.workload, &outcome);
    if st.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if let Some(p) = &cli.plot {
        ferrox_perf::plot::draw(p, &opened.label, &outcome)?;
        if !st.json {
            println!("plot: {}", p.display());
        }
    }
    Ok(report.passed)
}

fn compare(cli: CompareCli) -> Result<bool, Error> {
    if cli.rounds == 0 {
        return Err(Error::usage("--rounds must be at least 1"));
    }
    let st = settings(&cli.work)?;
    let specs: [TargetSpec; 2] = [parse::parse_target(&cli.a)?, parse::parse_target(&cli.b)?];
    let session = Session::start(&st.session)?;
    let a = target::open(&session, &specs[0], "perf-a", &st.open)?;
    let b = match target::open(&session, &specs[1], "perf-b", &st.open) {
        Ok(b) => b,
        Err(e) => {
            drop(session);
            return Err(e);
        }
    };
    let r = compare_rounds(&cli, &st, &session, &a, &b);
    drop(session); // the reactors first, then the targets (a pcie:// controller's CC.SHN)
    r
}

fn compare_rounds(
    cli: &CompareCli,
    st: &Settings,
    session: &Session,
    a: &target::Opened,
    b: &target::Opened,
) -> Result<bool, Error> {
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for round in 0..cli.rounds {
        for (t, out) in [(a, &mut ra), (b, &mut rb)] {
            if !st.json {
                eprintln!("round {}/{}: {}", round + 1, cli.rounds, t.label);
            }
            let o = bench::run(session, &t.dev, &st.workload, !st.json, None)?;
            out.push(Report::new(&t.label, &st.workload, &o));
        }
    }
    let c = Comparison::new(&a.label, &b.label, ra, rb);
    if st.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&c).expect("a comparison always serializes")
        );
    } else {
        print!("{}", c.table());
    }
    Ok(c.passed)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = if args.get(1).map(String::as_str) == Some("compare") {
        compare(parse_cli::<CompareCli>(&args[1..]))
    } else {
        run(parse_cli::<RunCli>(&args))
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("ferrox-perf: the run failed (verify mismatches or I/O errors above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ferrox-perf: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
