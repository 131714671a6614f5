//! `cairn subscribe`: follow a stream or $all (history, then live events) until Ctrl-C.
//!
//! Events go to stdout (`event_text` lines, or `event_json` lines with `--json`). The
//! subscription's markers go to stderr as `-- ...` lines in text mode, so the events can be
//! piped on their own; with `--json` they are JSON lines on stdout, in order with the events.

use std::io::{self, Write};
use std::process::ExitCode;

use cairn_client::{
    reads_by_position, Client, Error, ReadFrom, ReadOptions, SubscribeOptions, SubscriptionFilter,
    SubscriptionMessage,
};
use clap::Args;
use tokio_stream::StreamExt;

use super::output::{event_json, event_text, fail, one_line, usage};
use super::{ClientOptions, EXIT_FAILURE};

#[derive(Args, Debug)]
pub struct SubscribeArgs {
    /// The stream to follow, '$all' for every stream in commit order, or an index in $all
    /// order: '$ce-<category>', '$et-<event type>', '$tag-<tag>'.
    pub stream: String,
    /// First revision (stream) or position ($all, an index) to deliver, or `end` for new events only
    /// (default: the start).
    #[arg(long, value_parser = parse_from)]
    pub from: Option<ReadFrom>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Filtered $all: a checkpoint after this many scanned events (default: the server's).
    #[arg(long)]
    pub checkpoint_interval: Option<u64>,
    /// Stop with the error when the serving node fails, instead of resubscribing elsewhere.
    #[arg(long)]
    pub no_resubscribe: bool,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// The `$all` filter's flags, the same for `cairn subscribe '$all'` and
/// `cairn group create G --stream '$all'`.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// $all only: events of streams whose name starts with this (starting with '$', a
    /// consumer group also gets those system streams).
    #[arg(long)]
    pub stream_prefix: Option<String>,
    /// $all only: events whose type starts with this.
    #[arg(long)]
    pub type_prefix: Option<String>,
    /// $all only: events whose whole type matches this regular expression.
    #[arg(long)]
    pub type_regex: Option<String>,
}

impl FilterArgs {
    /// `None` when no flag is given.
    pub fn filter(&self) -> Option<SubscriptionFilter> {
        let filter = SubscriptionFilter {
            stream_prefix: self.stream_prefix.clone(),
            event_type_prefix: self.type_prefix.clone(),
            event_type_regex: self.type_regex.clone(),
        };
        (filter != SubscriptionFilter::default()).then_some(filter)
    }

    /// A bad `--type-regex` is a usage error (exit 2) before anything is dialled; the
    /// server checks it too.
    pub fn check(&self) -> Result<(), ExitCode> {
        let Some(regex) = &self.type_regex else {
            return Ok(());
        };
        let Err(e) = regex::Regex::new(regex) else {
            return Ok(());
        };
        let why = e.to_string();
        let why = why
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .trim_start_matches("error: ");
        Err(usage(format!(
            "--type-regex {regex:?} is not a valid regular expression: {}",
            one_line(why)
        )))
    }
}

/// `end`, or a revision / position.
fn parse_from(text: &str) -> Result<ReadFrom, String> {
    if text == "end" {
        return Ok(ReadFrom::End);
    }
    text.parse()
        .map(ReadFrom::At)
        .map_err(|_| format!("{text:?} is neither a number nor `end`"))
}

fn options(args: &SubscribeArgs) -> SubscribeOptions {
    let mut options = SubscribeOptions::default().from(args.from.unwrap_or_default());
    if let Some(filter) = args.filter.filter() {
        options = options.filter(filter);
    }
    if let Some(interval) = args.checkpoint_interval {
        options = options.checkpoint_interval(interval);
    }
    if args.no_resubscribe {
        options = options.no_resubscribe();
    }
    options
}

/// Writes one message: events (and, with `--json`, markers) on stdout, text markers on stderr.
/// `caught_up` is whether a `caught up` marker was written since the last `fell behind`: a
/// resubscription on another node catches up again, which the reader already knows.
fn print(message: &SubscriptionMessage, json: bool, caught_up: &mut bool) -> io::Result<()> {
    match message {
        SubscriptionMessage::CaughtUp { .. } if *caught_up => return Ok(()),
        SubscriptionMessage::CaughtUp { .. } => *caught_up = true,
        SubscriptionMessage::FellBehind { .. } => *caught_up = false,
        _ => {}
    }
    let line = match (message, json) {
        (SubscriptionMessage::Event(event), true) => event_json(event).to_string(),
        (SubscriptionMessage::Event(event), false) => event_text(event),
        (SubscriptionMessage::CaughtUp { next }, true) => {
            serde_json::json!({ "caught_up": { "next": next } }).to_string()
        }
        (SubscriptionMessage::FellBehind { next }, true) => {
            serde_json::json!({ "fell_behind": { "next": next } }).to_string()
        }
        (SubscriptionMessage::Checkpoint { next_position }, true) => {
            serde_json::json!({ "checkpoint": { "next_position": next_position } }).to_string()
        }
        (SubscriptionMessage::CaughtUp { next }, false) => {
            return writeln!(io::stderr(), "-- caught up (next {next})");
        }
        (SubscriptionMessage::FellBehind { next }, false) => {
            return writeln!(io::stderr(), "-- fell behind (next {next})");
        }
        (SubscriptionMessage::Checkpoint { next_position }, false) => {
            return writeln!(io::stderr(), "-- checkpoint {next_position}");
        }
    };
    // stdout is line-buffered: each line reaches a pipe as soon as it is written.
    writeln!(io::stdout().lock(), "{line}")
}

/// The revision (stream) or position ($all, an index) after the last event now; `None` when
/// the stream has no events or the read failed (then nothing is said).
async fn next_after_end(client: &Client, stream: &str) -> Option<u64> {
    let options = ReadOptions::backwards().max_count(1);
    let mut events = if reads_by_position(stream) {
        client.read_all(options).await.ok()?
    } else {
        client.read_stream(stream, options).await.ok()?
    };
    let last = events.next().await?.ok()?;
    Some(if reads_by_position(stream) {
        last.position + 1
    } else {
        last.revision + 1
    })
}

/// A warning when `--from` lies beyond the end: the subscription then waits, silently, for
/// events that may never come (a position from another store, a typo).
async fn warn_if_beyond_end(client: &Client, stream: &str, from: Option<ReadFrom>) {
    let Some(ReadFrom::At(from)) = from else {
        return;
    };
    if from == 0 {
        return;
    }
    let next = next_after_end(client, stream).await.unwrap_or(0);
    if from > next {
        let what = if reads_by_position(stream) {
            "position"
        } else {
            "revision"
        };
        eprintln!(
            "warning: --from {from} is beyond the end of {stream} (next {what} {next}); waiting for {what} {from}"
        );
    }
}

/// A reader that went away (`cairn subscribe ... | head`) ends the command normally.
fn output_failed(e: &io::Error) -> ExitCode {
    if e.kind() == io::ErrorKind::BrokenPipe {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: cannot write the output: {e}");
    ExitCode::from(EXIT_FAILURE)
}

pub async fn run(args: SubscribeArgs) -> ExitCode {
    if let Err(code) = args.filter.check() {
        return code;
    }
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    warn_if_beyond_end(&client, &args.stream, args.from).await;
    let json = args.client.json;
    let mut caught_up = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut subscription = tokio::select! {
        opened = client.subscribe(&args.stream, options(&args)) => match opened {
            Ok(subscription) => subscription,
            Err(e) => return fail(&e),
        },
        signal = &mut ctrl_c => return interrupted(signal),
    };
    loop {
        let item = tokio::select! {
            item = subscription.next() => item,
            signal = &mut ctrl_c => return interrupted(signal),
        };
        match item {
            Some(Ok(message)) => {
                if let Err(e) = print(&message, json, &mut caught_up) {
                    return output_failed(&e);
                }
            }
            Some(Err(e)) => return fail(&e),
            // A subscription ends only after yielding its error; this is a defensive exit.
            None => return fail(&Error::Unavailable("the subscription ended".to_owned())),
        }
    }
}

/// Ctrl-C is the normal way out; a signal handler that could not be installed is not.
fn interrupted(signal: io::Result<()>) -> ExitCode {
    match signal {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot listen for Ctrl-C: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
