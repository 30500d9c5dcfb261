//! `zms user`: the interactive client.
//!
//! Two threads. The network thread owns the [`Session`] (ZeroMQ sockets belong to one thread):
//! it carries out every typed line in order (requests, sends, switching groups), prints what
//! comes of them and the live messages above the prompt through rustyline's external printer,
//! so they never garble the line being typed, keeps the shared [`View`] (unread counts, servers
//! being reconnected, requests under way) up to date, and queues typed messages in the
//! [`Outbox`] while their group server is away. The input thread reads lines ([`editor`] on a
//! terminal), parses them ([`parse_line`]) and hands them over, ringing an inproc doorbell so
//! the network thread wakes at once; it never waits for the network while keys are typed (see
//! `Shell::settle`). With stdin not a terminal, lines are read plainly and everything prints
//! as plain lines without colour, so the client can be scripted.

use std::io::{BufRead, IsTerminal};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustyline::error::ReadlineError;
use rustyline::ExternalPrinter as _;

use super::command::{HistoryRange, Line, HELP, HISTORY_DEFAULT, MENU};
use super::editor::{self, LineEditor};
use super::mention::{self, Notify};
use super::outbox::{Outbox, Pending};
use super::render::{self, Style};
use super::safe;
use super::say;
use super::tty::{typed, EchoOff};
use super::view::View;
use crate::client::{GroupRef, Session, SessionEvent};
use crate::protocol::{self, GroupEntry, Member, Message};
use crate::{errinput, time, transport, Error, Result};
use chat::Conversations;

pub use super::command::parse_line;

mod catchup;
mod chat;

/// A job for the network thread: a typed line, carried out in its turn. Dropping `done` tells
/// the input thread it is over.
struct Job {
    /// The parsed line, or the usage message of a line that did not parse.
    line: std::result::Result<Line, String>,
    done: mpsc::Sender<()>,
}

/// Where the log of `zms user` goes unless `--log` asks for stderr: `user.log` in the state
/// directory (see [`crate::dirs`]), so log lines never land on the prompt.
pub fn log_path() -> Option<PathBuf> {
    crate::dirs::state_home_of("user.log")
        .ok()
        .map(|dir| dir.join("user.log"))
}

/// What the status row says while `line` is carried out, for lines that wait for a server.
fn busy_label(line: &Line) -> Option<String> {
    match line {
        Line::Join(spec) => Some(format!("joining {spec}…")),
        Line::Leave(_) => Some("leaving…".into()),
        Line::List => Some("listing groups…".into()),
        Line::History(_) => Some("fetching history…".into()),
        Line::Who(_) => Some("asking for members…".into()),
        Line::Invite(_) => Some("inviting…".into()),
        Line::Query(name) => Some(format!("opening @{name}…")),
        Line::Mentions => Some("looking for mentions…".into()),
        Line::Search(_) => Some("searching…".into()),
        _ => None,
    }
}

/// Where the network thread's lines go: above the prompt, or plain stdout.
type Print = Box<dyn FnMut(String) + Send>;

/// Where lines come from: rustyline on a terminal, plain stdin otherwise.
enum Input {
    Editor {
        editor: Box<LineEditor>,
        /// The history file, when there is a config directory for it.
        history: Option<PathBuf>,
    },
    Plain(std::io::StdinLock<'static>),
}

impl Input {
    /// A line editor with the history of earlier runs, and a printer for live lines.
    fn terminal(view: Arc<Mutex<View>>, style: Style) -> Result<(Input, Print)> {
        let mut editor = editor::new(view, style)?;
        let mut printer = editor
            .create_external_printer()
            .map_err(|e| errinput!("terminal: {e}"))?;
        let history = crate::dirs::state_home_of("history")
            .ok()
            .map(|dir| dir.join("history"));
        let history = history.filter(|path| {
            let ready = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .map_err(|e| e.to_string())
                .and_then(|()| match path.exists() {
                    true => editor.load_history(path).map_err(|e| e.to_string()),
                    false => Ok(()),
                });
            if let Err(err) = &ready {
                say!("warning: no input history ({}: {err})", path.display());
            }
            ready.is_ok()
        });
        // With its own newline: between two reads (not in raw mode) the printer writes the
        // text as it is, and the next prompt would draw over a line left unterminated.
        let print: Print = Box::new(move |line| drop(printer.print(format!("{line}\n"))));
        Ok((
            Input::Editor {
                editor: Box::new(editor),
                history,
            },
            print,
        ))
    }

    /// The next line, or `None` at end of input. `status` shows the status row under it.
    fn read(&mut self, prompt: &(String, String), status: bool) -> Result<Option<String>> {
        match self {
            Input::Editor { editor, history } => loop {
                let columns = editor.dimensions().map_or(80, |(c, _)| c);
                if let Some(helper) = editor.helper() {
                    helper.set_status(status, &prompt.0, usize::from(columns));
                }
                match editor.readline(&(prompt.0.as_str(), prompt.1.as_str())) {
                    Ok(line) => {
                        if status && !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.trim_end());
                            if let Some(path) = history {
                                if let Err(err) = editor.append_history(path) {
                                    say!("warning: input history not saved: {err}");
                                    *history = None;
                                }
                            }
                        }
                        return Ok(Some(line));
                    }
                    // Ctrl-C is bound to clearing the line (editor::new); a SIGINT lands here.
                    // Ctrl-D on an empty line quits.
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

/// Runs the interactive client until /quit or end of input. `log` is the file the log goes
/// to, when it is not stderr (named by /help).
///
/// # Errors
/// Only failures of the terminal or of libzmq itself; server errors are printed and the
/// client goes on.
pub fn run(ctx: &zmq::Context, session: Session, log: Option<&Path>, notify: Notify) -> Result<()> {
    let name = session.name().to_string();
    let servers = session.directories();
    let view = Arc::new(Mutex::new(View::new(&name)));
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let colour = terminal && render::colour_wanted(std::env::var_os("NO_COLOR").is_some(), true);
    let style = Style::new(colour, jiff::tz::TimeZone::system()).for_user(&name);
    let (mut input, print) = match terminal {
        true => Input::terminal(Arc::clone(&view), style.clone())?,
        false => (
            Input::Plain(std::io::stdin().lock()),
            Box::new(|line| say!("{line}")) as Print,
        ),
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

    let (jobs, job_rx) = mpsc::channel::<Job>();
    let network = Network {
        session,
        view: Arc::clone(&view),
        style: style.clone(),
        print,
        outbox: Outbox::default(),
        terminal,
        log: log.map(Path::to_path_buf),
        // Only a person at a terminal is called; a script reads the lines.
        notify: if terminal { notify } else { Notify::None },
        conversations: Conversations::default(),
        reading: catchup::Reading::default(),
    };
    // The network thread says hello first: a message server that does not answer keeps
    // nobody from typing.
    let network = std::thread::Builder::new()
        .name("network".into())
        .spawn(move || network.run(&servers, bell, job_rx))?;
    let mut shell = Shell {
        jobs,
        doorbell,
        view,
        style,
        terminal,
    };
    let result = shell.read_loop(&mut input);
    drop(shell); // closes the job channel and rings: the network thread ends
    let _ = network.join();
    result
}

/// The network thread's state.
struct Network {
    session: Session,
    view: Arc<Mutex<View>>,
    style: Style,
    print: Print,
    outbox: Outbox,
    /// Whether output is for a person at a terminal (local times) or a script (RFC 3339).
    terminal: bool,
    /// The log file, named by /help.
    log: Option<PathBuf>,
    /// How a mention or a direct message gets the user's attention.
    notify: Notify,
    /// Conversations found in the message server's list, and when to look again.
    conversations: Conversations,
    /// Read positions to send, and the user's own last messages.
    reading: catchup::Reading,
}

impl Network {
    /// Hello to the message server (`servers`), then live events out, jobs in, until the
    /// job channel closes.
    fn run(mut self, servers: &[String], bell: zmq::Socket, jobs: mpsc::Receiver<Job>) {
        let hello = self.session.hello();
        self.tell_trusted();
        (self.print)(match hello {
            Ok(()) => format!(
                "connected to {} as {}; /list shows groups, /join NAME joins one, /help for more",
                servers.join(","),
                self.session.name()
            ),
            Err(err) => format!(
                "warning: {}; groups can still be joined by HOST:PORT",
                safe::field(&err.to_string())
            ),
        });
        self.start_in_my_groups();
        loop {
            // Wakes at least every second to retry queued messages.
            match self
                .session
                .next_event_or(Some(&bell), Duration::from_secs(1))
            {
                Ok(Some(event)) => self.event(event),
                Ok(None) => {
                    while bell.recv_bytes(zmq::DONTWAIT).is_ok() {}
                    loop {
                        match jobs.try_recv() {
                            Ok(job) => self.job(job),
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => return self.finish(),
                        }
                    }
                    self.retry_due();
                    self.look_for_conversations();
                }
                Err(err) => (self.print)(self.style.error(&format!("error: {err}"))),
            }
            self.flush_reads(false);
            self.tell_trusted();
        }
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // A panic elsewhere must not take the client's display down with it.
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Says which server keys were trusted on first use, and where they were pinned.
    fn tell_trusted(&mut self) {
        for trusted in self.session.take_trusted() {
            (self.print)(self.style.quiet(&format!("-- {trusted}")));
        }
    }

    /// Carries out one line; the status row shows it under way meanwhile.
    fn job(&mut self, job: Job) {
        match job.line {
            Ok(line) => {
                let busy = busy_label(&line).is_some();
                if let Err(err) = self.execute(line) {
                    (self.print)(self.style.error(&format!("error: {err}")));
                }
                if busy {
                    self.view().busy_done();
                }
            }
            Err(usage) => (self.print)(safe::field(&usage).into_owned()),
        }
        self.tell_trusted();
        drop(job.done);
    }

    /// Updates the view, then prints the event's line (never holding the lock while printing:
    /// the printer may wait for the input thread, which reads the view to draw the status row).
    fn event(&mut self, event: SessionEvent) {
        let mut call = String::new();
        let line = {
            let mut view = self.view();
            match &event {
                SessionEvent::Message(d) => {
                    let (group, m) = (&d.group, &d.message);
                    view.message(group, &m.sender);
                    let me = self.session.name();
                    if !mention::mentions(&m.text, me).is_empty() && m.sender != me {
                        view.mention(group);
                    }
                    if mention::calls(&group.name, &m.sender, &m.text, me) {
                        let title = match protocol::conversation_users(&group.name) {
                            Some(_) => format!("{} wrote to you", m.sender),
                            None => format!("{} mentioned you in {}", m.sender, group.name),
                        };
                        call = self.notify.sequence(&title);
                    }
                }
                SessionEvent::ServerLost(a) => view.set_lost(a, true),
                SessionEvent::ServerBack(a) => view.set_lost(a, false),
                SessionEvent::Presence { user, joined, .. } => view.presence(user, *joined),
                SessionEvent::MembershipEnded(group) => view.leave(group),
                SessionEvent::Moved { from, to } => view.moved(from, to),
            }
            self.style
                .event(&event, view.current(), &|a| view.groups_at(a))
        };
        // The bell and notification go after the line, written as the line is.
        (self.print)(format!("{line}{call}"));
        if let SessionEvent::Message(d) = &event {
            self.shown(&d.group, &d.message);
        }
        match &event {
            SessionEvent::ServerBack(address) => self.flush(address),
            // Messages kept for the old server go to the new one, under the same ids.
            SessionEvent::Moved { from, to } => {
                self.outbox.moved(from, to);
                let (old, new) = (
                    self.outbox.count(&from.address),
                    self.outbox.count(&to.address),
                );
                let mut view = self.view();
                view.set_queued(&from.address, old);
                view.set_queued(&to.address, new);
                drop(view);
                self.flush(&to.address);
            }
            _ => {}
        }
    }

    /// Carries out one line, printing its outcome.
    fn execute(&mut self, line: Line) -> Result<()> {
        match line {
            Line::Empty | Line::Menu | Line::Quit => {}
            Line::Say(text) => {
                protocol::check_text(&text).map_err(|why| errinput!("not sent: {why}"))?;
                let group = self.require_current()?;
                self.say(group, text);
            }
            Line::List => {
                let groups = self.session.list_groups()?;
                self.view()
                    .set_listed(groups.iter().map(|g| g.name.clone()));
                self.print_groups(&groups);
            }
            Line::Join(spec) => {
                let group = self.session.resolve(&spec)?;
                let last_seq = self.session.join(&group)?;
                let shown = safe::field(&group.to_string()).into_owned();
                (self.print)(match last_seq {
                    0 => format!("joined {shown}: no messages yet"),
                    1 => format!("joined {shown}: 1 earlier message (/history shows it)"),
                    n => format!("joined {shown}: {n} earlier messages (/history shows them)"),
                });
                self.view().join(group);
            }
            Line::Leave(spec) => {
                let group = match spec {
                    Some(spec) => self.joined_or_resolve(spec)?,
                    None => self.require_current()?,
                };
                let left = self.session.leave(&group);
                // A membership that already ended elsewhere is left all the same.
                if let Err(Error::Rejected {
                    code: protocol::ErrorCode::NotMember,
                    ..
                }) = &left
                {
                    self.view().leave(&group);
                }
                left?;
                self.conversations.left.insert(group.clone());
                (self.print)(format!("left {}", safe::field(&group.to_string())));
                self.view().leave(&group);
            }
            Line::Switch(spec) => {
                let group = self.view().find_joined(&spec).ok_or_else(|| {
                    errinput!("not joined to '{spec}' in this session; /join it first")
                })?;
                (self.print)(format!("now in {}", safe::field(&group.to_string())));
                self.view().switch(group.clone());
                self.switched(&group)?;
            }
            Line::History(range) => {
                let group = self.require_current()?;
                let messages = match range {
                    HistoryRange::Last(n) => self.session.history(&group, None, Some(n))?,
                    HistoryRange::Since(t) => {
                        let since = time::parse(&t, time::now_ms())?;
                        self.session.history(&group, Some(since), None)?
                    }
                };
                self.print_history(&group, &messages);
                let first_kept = self.session.first_kept(&group)?;
                if let Some(line) = super::output::trimmed_note(first_kept, &messages) {
                    (self.print)(line);
                }
            }
            Line::Who(spec) => {
                let group = match spec {
                    Some(spec) => self.joined_or_resolve(spec)?,
                    None => self.require_current()?,
                };
                let members = self.session.members(&group)?;
                self.view()
                    .set_members(members.iter().map(|m| m.name.clone()));
                self.print_members(&group, &members);
            }
            Line::Msg(name, text) => {
                protocol::check_text(&text).map_err(|why| errinput!("not sent: {why}"))?;
                let group = self.session.conversation(&name)?;
                self.view().add(group.clone());
                self.say(group, text);
            }
            Line::Query(name) => {
                let group = self.session.conversation(&name)?;
                (self.print)(format!(
                    "now talking with @{} (/history shows earlier messages)",
                    safe::field(&name)
                ));
                self.conversations.left.remove(&group);
                self.view().join(group);
            }
            Line::Mentions => self.print_mentions()?,
            Line::Invite(key) => {
                let group = self.require_current()?;
                self.session.invite(&group, &key)?;
                (self.print)(format!(
                    "invited {} into {}",
                    safe::field(&key),
                    safe::field(&group.to_string())
                ));
            }
            Line::Search(_) | Line::Unread | Line::Edit(..) | Line::Delete(_) => {
                self.search_or_change(line)?
            }
            Line::Help => {
                let log = match &self.log {
                    Some(path) => format!("\nlog: warnings go to {}", path.display()),
                    None => String::new(),
                };
                (self.print)(format!("{HELP}{log}"));
            }
        }
        Ok(())
    }

    /// A joined group by name, or else whatever the name resolves to.
    fn joined_or_resolve(&mut self, spec: String) -> Result<GroupRef> {
        // Bound first: the view must not stay locked while the session works.
        let joined = self.view().find_joined(&spec);
        match joined {
            Some(group) => Ok(group),
            None => self.session.resolve(&spec),
        }
    }

    fn require_current(&self) -> Result<GroupRef> {
        self.view()
            .current()
            .cloned()
            .ok_or_else(|| errinput!("no current group; /join one first (/list shows them)"))
    }

    fn print_groups(&mut self, groups: &[GroupEntry]) {
        if groups.is_empty() {
            (self.print)("no groups are registered with the message server".into());
        }
        let joined: Vec<GroupRef> = self.view().joined().to_vec();
        let lines: Vec<String> = groups
            .iter()
            .map(|g| {
                let joined = joined
                    .iter()
                    .any(|j| j.name == g.name && j.address == g.address);
                format!(
                    "  {:<20} {}{}",
                    safe::field(&g.name),
                    safe::field(&g.address),
                    if joined { "  (joined)" } else { "" }
                )
            })
            .collect();
        self.print_lines(lines);
    }

    fn print_history(&mut self, group: &GroupRef, messages: &[Message]) {
        if messages.is_empty() {
            (self.print)(format!("no messages in {}", safe::field(&group.name)));
        }
        let now = time::now_ms();
        let lines: Vec<String> = messages
            .iter()
            .map(|m| match self.terminal {
                true => self.style.history(m, now),
                false => render::plain_history(m),
            })
            .collect();
        self.print_lines(lines);
    }

    fn print_members(&mut self, group: &GroupRef, members: &[Member]) {
        let online = members.iter().filter(|m| m.online).count();
        let s = if members.len() == 1 { "" } else { "s" };
        let mut lines = vec![format!(
            "{} member{s} of {}, {online} online:",
            members.len(),
            safe::field(&group.name)
        )];
        lines.extend(members.iter().map(|m| self.style.member(m)));
        self.print_lines(lines);
    }

    /// Prints lines as one block: one redraw of the prompt, not one per line.
    fn print_lines(&mut self, lines: Vec<String>) {
        if !lines.is_empty() {
            (self.print)(lines.join("\n"));
        }
    }

    /// Sends `text`, or queues it while its group server is away (or others wait before it).
    fn say(&mut self, group: GroupRef, text: String) {
        let pending = Pending {
            client_id: self.session.next_client_id(),
            group,
            text,
        };
        let address = pending.group.address.clone();
        if self.view().is_lost(&address) || self.outbox.holds(&address) {
            return self.queue(pending);
        }
        // The message comes back as a live push, which is the confirmation.
        match self
            .session
            .send_with_id(&pending.group, &pending.client_id, &pending.text)
        {
            Ok(_) => {}
            Err(Error::Timeout(_)) => self.queue(pending),
            Err(err) => (self.print)(self.style.error(&format!("error: not sent: {err}"))),
        }
    }

    fn queue(&mut self, pending: Pending) {
        let address = pending.group.address.clone();
        let name = pending.group.name.clone();
        self.outbox.push(pending, Instant::now());
        let count = self.outbox.count(&address);
        self.view().set_queued(&address, count);
        (self.print)(self.style.quiet(&format!(
            "-- {name} is not answering; message kept ({count} waiting), sent when it is back"
        )));
    }

    /// Sends what waits for `address`, in order.
    fn flush(&mut self, address: &str) {
        if !self.outbox.holds(address) {
            return;
        }
        let session = &mut self.session;
        let flushed = self.outbox.flush(address, Instant::now(), |p| {
            session
                .send_with_id(&p.group, &p.client_id, &p.text)
                .map(|_| ())
        });
        let left = self.outbox.count(address);
        self.view().set_queued(address, left);
        if flushed.sent > 0 {
            let s = if flushed.sent == 1 { "" } else { "s" };
            (self.print)(self.style.quiet(&format!(
                "-- sent {} kept message{s} to {address}",
                flushed.sent
            )));
        }
        for (p, why) in flushed.failed {
            (self.print)(self.style.error(&format!(
                "error: not sent to {}: {:?}: {why}",
                p.group.name, p.text
            )));
        }
    }

    /// Retries queued messages of servers not known to be away (a send that timed out while
    /// the heartbeat still had them), at most every few seconds.
    fn retry_due(&mut self) {
        for address in self.outbox.due(Instant::now()) {
            if !self.view().is_lost(&address) {
                self.flush(&address);
            }
        }
    }

    /// At exit: whatever is still queued is reported, never dropped silently, and kept on
    /// disk with its id: a try may have been stored, so only a send under the same id is safe.
    fn finish(mut self) {
        self.flush_reads(true);
        let kept = crate::dirs::state_home_of("unconfirmed")
            .ok()
            .map(|dir| super::kept::Kept::new(&dir, self.session.name()));
        for p in self.outbox.drain() {
            let message = protocol::Outgoing {
                client_id: p.client_id.clone(),
                text: p.text.clone(),
            };
            let retry = match kept.as_ref().map(|k| k.keep(&p.group, &[message])) {
                Some(Ok(_)) => format!(
                    "kept: `{} send {} --name {}` sends it again, stored at most once",
                    crate::program::name(),
                    super::output::group_label(&p.group.name, self.session.name()),
                    self.session.name()
                ),
                _ => format!(
                    "to retry without a duplicate, send it with --id {}",
                    p.client_id
                ),
            };
            (self.print)(self.style.error(&format!(
                "not confirmed ({} did not answer; it may be stored): [{}] {} -- {retry}",
                p.group.address, p.group.name, p.text
            )));
        }
    }
}

/// The client's state on the input side.
struct Shell {
    jobs: mpsc::Sender<Job>,
    doorbell: zmq::Socket,
    view: Arc<Mutex<View>>,
    style: Style,
    /// Whether input comes from a person at a terminal (see [`Shell::settle`]).
    terminal: bool,
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Replace the sender so the channel closes, then wake the network thread to see it.
        let (closed, _) = mpsc::channel();
        self.jobs = closed;
        let _ = self.doorbell.send("", zmq::DONTWAIT);
    }
}

/// How long [`Shell::settle`] waits quietly before saying what it waits for.
const QUIET_WAIT: Duration = Duration::from_millis(500);

/// The longest [`Shell::settle`] waits: every request inside has its own timeouts, so this
/// bound only guards against a bug.
const LONGEST_WAIT: Duration = Duration::from_secs(120);

impl Shell {
    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a line (or its usage message) to the network thread; returns what tells when it
    /// is over.
    fn submit(&self, line: std::result::Result<Line, String>) -> Result<mpsc::Receiver<()>> {
        if let Some(label) = line.as_ref().ok().and_then(busy_label) {
            self.view().busy(label);
        }
        let (done, over) = mpsc::channel();
        self.jobs
            .send(Job { line, done })
            .map_err(|_| errinput!("the network thread has stopped"))?;
        match self.doorbell.send("", zmq::DONTWAIT) {
            // A full doorbell has rung already.
            Ok(()) | Err(zmq::Error::EAGAIN) => Ok(over),
            Err(e) => Err(e.into()),
        }
    }

    /// Before the next prompt, gives a line the chance to finish, so the prompt shows its
    /// outcome (`[general]> ` after `/join general`) — but only until a key is typed: then
    /// the editor takes over at once, the line goes on in the background ("joining…" in the
    /// status row) and its outcome prints above the prompt. Meanwhile the terminal does not
    /// echo, so keys typed wait for the editor instead of landing raw on the screen.
    fn settle(&self, over: mpsc::Receiver<()>, label: Option<String>) {
        if !self.terminal {
            return;
        }
        let stdin = std::io::stdin();
        let _quiet = EchoOff::new(stdin.as_fd());
        let start = Instant::now();
        let mut said = false;
        while start.elapsed() < LONGEST_WAIT {
            if let Err(mpsc::TryRecvError::Disconnected) = over.try_recv() {
                return;
            }
            if typed(stdin.as_fd(), Duration::from_millis(20)) {
                return;
            }
            if let Some(label) = label
                .as_ref()
                .filter(|_| !said && start.elapsed() > QUIET_WAIT)
            {
                say!(
                    "{} (type on: the prompt comes back with the first key)",
                    safe::field(label)
                );
                said = true;
            }
        }
    }

    fn read_loop(&mut self, input: &mut Input) -> Result<()> {
        loop {
            let prompt = {
                let mut view = self.view();
                view.prompted();
                view.prompt(&self.style)
            };
            let Some(line) = input.read(&prompt, true)? else {
                return Ok(());
            };
            match parse_line(&line) {
                Ok(Line::Quit) => return Ok(()),
                Ok(Line::Menu) => {
                    if !self.menu(input)? {
                        return Ok(());
                    }
                }
                Ok(Line::Empty) => {}
                parsed => self.run_line(parsed)?,
            }
        }
    }

    /// Hands a line over; a line that waits for a server gets [`Shell::settle`]d.
    fn run_line(&self, line: std::result::Result<Line, String>) -> Result<()> {
        let says = matches!(line, Ok(Line::Say(_)));
        let label = line.as_ref().ok().and_then(busy_label);
        let over = self.submit(line)?;
        // A message needs no wait: its echo comes back live.
        if !says {
            self.settle(over, label);
        }
        Ok(())
    }

    /// The original numbered menu, until the user leaves it (7) or quits (6). Returns false
    /// when the user chose Quit or input ended.
    fn menu(&mut self, input: &mut Input) -> Result<bool> {
        let plain = |q: &str| (q.to_string(), q.to_string());
        say!("{MENU}");
        loop {
            let Some(choice) = input.read(&plain("choose 1-7: "), false)? else {
                return Ok(false);
            };
            let mut ask = |q: &str| -> Result<Option<String>> {
                Ok(input.read(&plain(q), false)?.map(|a| a.trim().to_string()))
            };
            let line = match choice.trim() {
                // An empty answer asks again.
                "" => continue,
                "1" => Line::List,
                "2" => match ask("group name or IP:port: ")? {
                    Some(spec) if !spec.is_empty() => Line::Join(spec),
                    Some(_) => continue,
                    None => return Ok(false),
                },
                "3" => Line::Leave(None),
                // An empty message is refused in one line, as at the prompt.
                "4" => match ask("message: ")? {
                    Some(text) => Line::Say(text),
                    None => return Ok(false),
                },
                "5" => match ask("since (TIME, empty for the last 20): ")? {
                    Some(s) if s.is_empty() => Line::History(HistoryRange::Last(HISTORY_DEFAULT)),
                    Some(s) => Line::History(HistoryRange::Since(s)),
                    None => return Ok(false),
                },
                "6" => return Ok(false),
                "7" => {
                    say!("back to the chat prompt (/menu shows the menu again)");
                    return Ok(true);
                }
                other => {
                    say!("'{}' is not on the menu; choose 1-7", safe::field(other));
                    continue;
                }
            };
            self.run_line(Ok(line))?;
        }
    }
}
