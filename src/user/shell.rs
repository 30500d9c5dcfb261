//! `zms user`: the interactive client.
//!
//! Two threads. The network thread owns the [`Session`] (ZeroMQ sockets belong to one thread)
//! and prints live messages above the prompt through rustyline's external printer, so they
//! never garble the line being typed. The input thread reads lines, parses them
//! ([`parse_line`], pure) and hands the network thread jobs, ringing an inproc doorbell so the
//! network thread wakes at once. With stdin not a terminal, lines are read plainly and
//! everything prints as plain lines, so the client can be scripted.

use std::io::{BufRead, IsTerminal};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::ExternalPrinter as _;

use crate::client::{GroupRef, Session, SessionEvent, Timeouts};
use crate::protocol::{GroupEntry, Member, Message};
use crate::{errinput, time, transport, Error, Result};

/// A parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Empty,
    /// Text to send to the current group.
    Say(String),
    List,
    Join(String),
    Leave(Option<String>),
    Switch(String),
    /// The last N messages, or those since a TIME.
    History(HistoryRange),
    Who(Option<String>),
    Menu,
    Help,
    Quit,
}

/// Which history `/history` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryRange {
    Last(u64),
    Since(String),
}

/// How many messages `/history` shows by default.
const HISTORY_DEFAULT: u64 = 20;

/// Parses one line of input.
///
/// # Errors
/// A one-line explanation for an unknown command or missing argument.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(Line::Empty);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Line::Say(line.to_string()));
    };
    if command.starts_with('/') {
        // "//text" sends "/text".
        return Ok(Line::Say(command.to_string()));
    }
    let mut words = command.split_whitespace();
    let verb = words.next().unwrap_or("");
    let rest: Vec<&str> = words.collect();
    let one = |what: &str| match rest.as_slice() {
        [arg] => Ok(arg.to_string()),
        _ => Err(format!("usage: /{verb} {what}")),
    };
    let optional = || rest.first().map(|s| s.to_string());
    Ok(match verb {
        "list" | "l" => Line::List,
        "join" | "j" => Line::Join(one("NAME | HOST:PORT | NAME@HOST:PORT")?),
        "leave" => Line::Leave(optional()),
        "switch" | "g" => Line::Switch(one("GROUP")?),
        "who" | "members" => Line::Who(optional()),
        "history" | "h" => match rest.as_slice() {
            [] => Line::History(HistoryRange::Last(HISTORY_DEFAULT)),
            ["since", time @ ..] if !time.is_empty() => {
                Line::History(HistoryRange::Since(time.join(" ")))
            }
            [n] if n.parse::<u64>().is_ok() => {
                Line::History(HistoryRange::Last(n.parse().expect("bug: checked")))
            }
            _ => return Err("usage: /history [N | since TIME]".into()),
        },
        "send" | "say" => {
            let text = command[verb.len()..].trim_start();
            if text.is_empty() {
                return Err("usage: /send TEXT".into());
            }
            Line::Say(text.to_string())
        }
        "menu" => Line::Menu,
        "help" | "?" => Line::Help,
        "quit" | "exit" | "q" => Line::Quit,
        other => return Err(format!("unknown command /{other}; /help lists them")),
    })
}

const HELP: &str = "\
commands:
  /list                        groups the message server knows
  /join NAME|HOST:PORT         join a group (by name, group server address, or NAME@HOST:PORT)
  /leave [GROUP]               leave the current (or named) group
  /switch GROUP  (/g)          make another joined group the current one
  /history [N | since TIME]    the last N (20) messages, or those since TIME (10m, 2h, RFC 3339)
  /who [GROUP]                 members, and who is online
  /menu                        the original numbered menu
  /quit                        leave the client (memberships stay)
  anything else                is sent to the current group (start with // to send a leading /)";

const MENU: &str = "\
1. Get the list of groups
2. Join a group (name or IP:port)
3. Leave the current group
4. Send a message to the current group
5. Receive messages from the current group (optionally since a time)
6. Quit";

/// A job for the network thread.
type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// Where lines come from: rustyline on a terminal, plain stdin otherwise.
enum Input {
    Editor(Box<rustyline::DefaultEditor>),
    Plain(std::io::StdinLock<'static>),
}

impl Input {
    /// The next line, or `None` at end of input.
    fn read(&mut self, prompt: &str) -> Result<Option<String>> {
        match self {
            Input::Editor(editor) => loop {
                match editor.readline(prompt) {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        return Ok(Some(line));
                    }
                    // Ctrl-C clears the line, as in a shell; Ctrl-D quits.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(errinput!("terminal: {e}")),
                }
            },
            Input::Plain(stdin) => {
                let mut line = String::new();
                Ok((stdin.read_line(&mut line)? > 0).then_some(line))
            }
        }
    }
}

/// The client's state on the input side.
struct Shell {
    jobs: mpsc::Sender<Job>,
    doorbell: zmq::Socket,
    /// The group plain text goes to; read by the network thread to label messages.
    current: Arc<Mutex<Option<GroupRef>>>,
    /// Groups joined in this run, in order.
    joined: Vec<GroupRef>,
}

/// Runs the interactive client until /quit or end of input.
///
/// # Errors
/// Only failures of the terminal or of libzmq itself; server errors are printed and the
/// client goes on.
pub fn run(ctx: &zmq::Context, servers: Vec<String>, name: &str) -> Result<()> {
    let mut session = Session::new(ctx, servers.clone(), name, Timeouts::default())?;
    let terminal = std::io::stdin().is_terminal();
    let (mut input, print): (Input, Box<dyn FnMut(String) + Send>) = if terminal {
        let mut editor = rustyline::DefaultEditor::new().map_err(|e| errinput!("terminal: {e}"))?;
        let mut printer = editor
            .create_external_printer()
            .map_err(|e| errinput!("terminal: {e}"))?;
        (
            Input::Editor(Box::new(editor)),
            Box::new(move |line| drop(printer.print(line))),
        )
    } else {
        (
            Input::Plain(std::io::stdin().lock()),
            Box::new(|line| println!("{line}")),
        )
    };

    static NEXT: AtomicU64 = AtomicU64::new(0);
    let pipe = format!(
        "inproc://zms-shell-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let bell = transport::socket(ctx, zmq::PAIR)?;
    bell.bind(&pipe)?;
    let doorbell = transport::socket(ctx, zmq::PAIR)?;
    doorbell.connect(&pipe)?;

    match session.hello() {
        Ok(()) => {
            println!(
            "connected to {} as {name}; /list shows groups, /join NAME joins one, /help for more",
            servers.iter().map(|s| transport::address(s)).collect::<Vec<_>>().join(",")
        )
        }
        Err(err) => println!("warning: {err}; groups can still be joined by HOST:PORT"),
    }

    let (jobs, job_rx) = mpsc::channel::<Job>();
    let current = Arc::new(Mutex::new(None));
    let network = {
        let current = Arc::clone(&current);
        std::thread::Builder::new()
            .name("network".into())
            .spawn(move || network(session, bell, job_rx, current, print))?
    };
    let mut shell = Shell {
        jobs,
        doorbell,
        current,
        joined: Vec::new(),
    };
    let result = shell.read_loop(&mut input);
    drop(shell); // closes the job channel and rings: the network thread ends
    let _ = network.join();
    result
}

/// The network thread: live events out, jobs in, until the job channel closes.
fn network(
    mut session: Session,
    bell: zmq::Socket,
    jobs: mpsc::Receiver<Job>,
    current: Arc<Mutex<Option<GroupRef>>>,
    mut print: Box<dyn FnMut(String) + Send>,
) {
    loop {
        match session.next_event_or(Some(&bell), Duration::from_secs(3600)) {
            Ok(Some(event)) => {
                let current = current.lock().map(|c| c.clone()).unwrap_or(None);
                print(render_event(&event, current.as_ref()));
            }
            Ok(None) => {
                while bell.recv_bytes(zmq::DONTWAIT).is_ok() {}
                loop {
                    match jobs.try_recv() {
                        Ok(job) => job(&mut session),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                }
            }
            Err(err) => print(format!("error: {err}")),
        }
    }
}

/// How a live event reads in the terminal.
pub fn render_event(event: &SessionEvent, current: Option<&GroupRef>) -> String {
    match event {
        SessionEvent::Message(d) => {
            let label = if Some(&d.group) == current {
                String::new()
            } else {
                format!("[{}] ", d.group.name)
            };
            format!(
                "{} {label}{}: {}",
                time::clock(d.message.ts),
                d.message.sender,
                d.message.text
            )
        }
        SessionEvent::ServerLost(a) => {
            format!("-- group server {a} is not answering; reconnecting…")
        }
        SessionEvent::ServerBack(a) => format!("-- group server {a} is back"),
        SessionEvent::Presence {
            group,
            user,
            joined,
        } => {
            format!(
                "-- {user} {} {}",
                if *joined { "joined" } else { "left" },
                group.name
            )
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Replace the sender so the channel closes, then wake the network thread to see it.
        let (closed, _) = mpsc::channel();
        self.jobs = closed;
        let _ = self.doorbell.send("", zmq::DONTWAIT);
    }
}

impl Shell {
    /// Runs `f` on the network thread and waits for its result.
    fn ask<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |session| drop(tx.send(f(session))));
        self.jobs
            .send(job)
            .map_err(|_| errinput!("the network thread has stopped"))?;
        self.doorbell.send("", 0)?;
        // Every request inside has its own timeouts; this bound only guards against a bug.
        rx.recv_timeout(Duration::from_secs(120))
            .map_err(|_| Error::Timeout("no answer from the network thread".into()))?
    }

    fn current(&self) -> Option<GroupRef> {
        self.current.lock().map(|c| c.clone()).unwrap_or(None)
    }

    fn set_current(&self, group: Option<GroupRef>) {
        if let Ok(mut c) = self.current.lock() {
            *c = group;
        }
    }

    fn prompt(&self) -> String {
        match self.current() {
            Some(g) => format!("[{}]> ", g.name),
            None => "> ".to_string(),
        }
    }

    fn read_loop(&mut self, input: &mut Input) -> Result<()> {
        loop {
            let Some(line) = input.read(&self.prompt())? else {
                return Ok(());
            };
            match parse_line(&line) {
                Ok(Line::Quit) => return Ok(()),
                Ok(Line::Menu) => {
                    if !self.menu(input)? {
                        return Ok(());
                    }
                }
                Ok(line) => self.execute(line),
                Err(usage) => println!("{usage}"),
            }
        }
    }

    /// The original numbered menu. Returns false when the user chose Quit.
    fn menu(&mut self, input: &mut Input) -> Result<bool> {
        println!("{MENU}");
        let Some(choice) = input.read("choose 1-6: ")? else {
            return Ok(false);
        };
        let mut ask = |q: &str| -> Result<String> {
            Ok(input.read(q)?.unwrap_or_default().trim().to_string())
        };
        let line = match choice.trim() {
            "1" => Line::List,
            "2" => Line::Join(ask("group name or IP:port: ")?),
            "3" => Line::Leave(None),
            "4" => Line::Say(ask("message: ")?),
            "5" => match ask("since (TIME, empty for the last 20): ")? {
                s if s.is_empty() => Line::History(HistoryRange::Last(HISTORY_DEFAULT)),
                s => Line::History(HistoryRange::Since(s)),
            },
            "6" => return Ok(false),
            other => {
                println!("'{other}' is not on the menu");
                return Ok(true);
            }
        };
        self.execute(line);
        Ok(true)
    }

    /// Carries out one line, printing the outcome or one line of error.
    fn execute(&mut self, line: Line) {
        if let Err(err) = self.try_execute(line) {
            println!("error: {err}");
        }
    }

    fn try_execute(&mut self, line: Line) -> Result<()> {
        match line {
            Line::Empty => {}
            Line::Say(text) => {
                let group = self.require_current()?;
                // The message comes back as a live push, which is the confirmation.
                self.ask(move |s| s.send(&group, &text))?;
            }
            Line::List => {
                let groups = self.ask(|s| s.list_groups())?;
                print_groups(&groups);
            }
            Line::Join(spec) => {
                let (group, last_seq) = self.ask(move |s| {
                    let group = s.resolve(&spec)?;
                    let last = s.join(&group)?;
                    Ok((group, last))
                })?;
                println!("joined {group}: {last_seq} earlier messages (/history shows them)");
                if !self.joined.contains(&group) {
                    self.joined.push(group.clone());
                }
                self.set_current(Some(group));
            }
            Line::Leave(spec) => {
                let group = match spec {
                    Some(spec) => self
                        .find_joined(&spec)
                        .map(Ok)
                        .unwrap_or_else(|| self.ask(move |s| s.resolve(&spec)))?,
                    None => self.require_current()?,
                };
                let target = group.clone();
                self.ask(move |s| s.leave(&target))?;
                println!("left {group}");
                self.joined.retain(|g| g != &group);
                if self.current().as_ref() == Some(&group) {
                    self.set_current(self.joined.last().cloned());
                }
            }
            Line::Switch(spec) => {
                let group = self.find_joined(&spec).ok_or_else(|| {
                    errinput!("not joined to '{spec}' in this session; /join it first")
                })?;
                println!("now in {group}");
                self.set_current(Some(group));
            }
            Line::History(range) => {
                let group = self.require_current()?;
                let target = group.clone();
                let messages = self.ask(move |s| match range {
                    HistoryRange::Last(n) => s.history(&target, None, Some(n)),
                    HistoryRange::Since(t) => {
                        s.history(&target, Some(time::parse(&t, time::now_ms())?), None)
                    }
                })?;
                print_history(&group, &messages);
            }
            Line::Who(spec) => {
                let group = match spec {
                    Some(spec) => match self.find_joined(&spec) {
                        Some(g) => g,
                        None => self.ask(move |s| s.resolve(&spec))?,
                    },
                    None => self.require_current()?,
                };
                let target = group.clone();
                let members = self.ask(move |s| s.members(&target))?;
                print_members(&group, &members);
            }
            Line::Help => println!("{HELP}"),
            Line::Menu | Line::Quit => {}
        }
        Ok(())
    }

    fn require_current(&self) -> Result<GroupRef> {
        self.current()
            .ok_or_else(|| errinput!("no current group; /join one first (/list shows them)"))
    }

    /// A joined group by name or `NAME@HOST:PORT`.
    fn find_joined(&self, spec: &str) -> Option<GroupRef> {
        self.joined
            .iter()
            .find(|g| g.name == spec || g.to_string() == spec)
            .cloned()
    }
}

fn print_groups(groups: &[GroupEntry]) {
    if groups.is_empty() {
        println!("no groups are registered with the message server");
    }
    for g in groups {
        println!("  {:<20} {}", g.name, g.address);
    }
}

fn print_history(group: &GroupRef, messages: &[Message]) {
    if messages.is_empty() {
        println!("no messages in {}", group.name);
    }
    for m in messages {
        println!(
            "{} #{} {}: {}",
            time::rfc3339(m.ts),
            m.seq,
            m.sender,
            m.text
        );
    }
}

fn print_members(group: &GroupRef, members: &[Member]) {
    println!("{} members of {}:", members.len(), group.name);
    for m in members {
        println!("  {}{}", m.name, if m.online { " (online)" } else { "" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands_or_text() {
        assert_eq!(
            parse_line("hello there"),
            Ok(Line::Say("hello there".into()))
        );
        assert_eq!(parse_line("  "), Ok(Line::Empty));
        assert_eq!(parse_line("//etc"), Ok(Line::Say("/etc".into())));
        assert_eq!(
            parse_line("/join general"),
            Ok(Line::Join("general".into()))
        );
        assert_eq!(
            parse_line("/j 127.0.0.1:5556"),
            Ok(Line::Join("127.0.0.1:5556".into()))
        );
        assert_eq!(parse_line("/leave"), Ok(Line::Leave(None)));
        assert_eq!(parse_line("/g random"), Ok(Line::Switch("random".into())));
        assert_eq!(
            parse_line("/history"),
            Ok(Line::History(HistoryRange::Last(20)))
        );
        assert_eq!(
            parse_line("/history 5"),
            Ok(Line::History(HistoryRange::Last(5)))
        );
        assert_eq!(
            parse_line("/history since 10m"),
            Ok(Line::History(HistoryRange::Since("10m".into())))
        );
        assert_eq!(
            parse_line("/send  hi  you"),
            Ok(Line::Say("hi  you".into()))
        );
        assert_eq!(parse_line("/quit"), Ok(Line::Quit));
        assert!(parse_line("/join").unwrap_err().contains("usage"));
        assert!(parse_line("/history soon").unwrap_err().contains("usage"));
        assert!(parse_line("/frobnicate")
            .unwrap_err()
            .contains("unknown command"));
    }

    #[test]
    fn live_messages_name_their_group_unless_current() {
        let g = GroupRef {
            name: "general".into(),
            address: "h:1".into(),
        };
        let r = GroupRef {
            name: "random".into(),
            address: "h:1".into(),
        };
        let event = SessionEvent::Message(crate::client::Delivery {
            group: r.clone(),
            message: Message {
                seq: 1,
                ts: 1_764_000_000_000,
                sender: "bob".into(),
                text: "hi".into(),
            },
        });
        assert_eq!(render_event(&event, Some(&g)), "16:00:00 [random] bob: hi");
        assert_eq!(render_event(&event, Some(&r)), "16:00:00 bob: hi");
    }
}
