//! `zms user`: the interactive client.
//!
//! Two threads. The network thread owns the [`Session`] (ZeroMQ sockets belong to one thread):
//! it prints live messages above the prompt through rustyline's external printer, so they never
//! garble the line being typed, keeps the shared [`View`] (unread counts, servers being
//! reconnected) up to date, and sends typed messages, queueing them in the [`Outbox`] while
//! their group server is away. The input thread reads lines ([`editor`] on a terminal), parses
//! them ([`parse_line`]) and hands the network thread jobs, ringing an inproc doorbell so it
//! wakes at once. With stdin not a terminal, lines are read plainly and everything prints as
//! plain lines without colour, so the client can be scripted.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustyline::error::ReadlineError;
use rustyline::ExternalPrinter as _;

use super::command::{HistoryRange, Line, HELP, HISTORY_DEFAULT, MENU};
use super::editor::{self, LineEditor};
use super::outbox::{Outbox, Pending};
use super::render::{self, Style};
use super::safe;
use super::say;
use super::view::View;
use crate::client::{GroupRef, Session, SessionEvent};
use crate::protocol::{self, GroupEntry, Member, Message};
use crate::{errinput, time, transport, Error, Result};

pub use super::command::parse_line;

/// A job for the network thread.
enum Job {
    /// Runs on the session; the closure sends its answer back itself.
    Ask(Box<dyn FnOnce(&mut Session) + Send>),
    /// Text for a group: sent now, or queued while its server is away.
    Say(GroupRef, String),
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
        let history = editor::history_path(
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        );
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

/// Runs the interactive client until /quit or end of input.
///
/// # Errors
/// Only failures of the terminal or of libzmq itself; server errors are printed and the
/// client goes on.
pub fn run(ctx: &zmq::Context, mut session: Session) -> Result<()> {
    let name = session.name().to_string();
    let servers = session.directories();
    let view = Arc::new(Mutex::new(View::new(&name)));
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let colour = terminal && render::colour_wanted(std::env::var_os("NO_COLOR").is_some(), true);
    let style = Style::new(colour, jiff::tz::TimeZone::system());
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

    match session.hello() {
        Ok(()) => say!(
            "connected to {} as {name}; /list shows groups, /join NAME joins one, /help for more",
            servers.join(",")
        ),
        Err(err) => say!(
            "warning: {}; groups can still be joined by HOST:PORT",
            safe::field(&err.to_string())
        ),
    }

    let (jobs, job_rx) = mpsc::channel::<Job>();
    let network = Network {
        session,
        view: Arc::clone(&view),
        style: style.clone(),
        print,
        outbox: Outbox::default(),
    };
    let network = std::thread::Builder::new()
        .name("network".into())
        .spawn(move || network.run(bell, job_rx))?;
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
}

impl Network {
    /// Live events out, jobs in, until the job channel closes.
    fn run(mut self, bell: zmq::Socket, jobs: mpsc::Receiver<Job>) {
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
                            Ok(Job::Ask(job)) => job(&mut self.session),
                            Ok(Job::Say(group, text)) => self.say(group, text),
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => return self.finish(),
                        }
                    }
                    self.retry_due();
                }
                Err(err) => (self.print)(self.style.error(&format!("error: {err}"))),
            }
        }
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // A panic elsewhere must not take the client's display down with it.
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Updates the view, then prints the event's line (never holding the lock while printing:
    /// the printer may wait for the input thread, which reads the view to draw the status row).
    fn event(&mut self, event: SessionEvent) {
        let line = {
            let mut view = self.view();
            match &event {
                SessionEvent::Message(d) => view.message(&d.group, &d.message.sender),
                SessionEvent::ServerLost(a) => view.set_lost(a, true),
                SessionEvent::ServerBack(a) => view.set_lost(a, false),
                SessionEvent::Presence { user, joined, .. } => view.presence(user, *joined),
            }
            self.style
                .event(&event, view.current(), &|a| view.groups_at(a))
        };
        (self.print)(line);
        if let SessionEvent::ServerBack(address) = &event {
            self.flush(address);
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
        let kept = crate::keys::config_dir()
            .ok()
            .map(|dir| super::kept::Kept::new(&dir, self.session.name()));
        for p in self.outbox.drain() {
            let message = crate::protocol::Outgoing {
                client_id: p.client_id.clone(),
                text: p.text.clone(),
            };
            let retry = match kept.as_ref().map(|k| k.keep(&p.group, &[message])) {
                Some(Ok(_)) => format!(
                    "kept: `zms send {} --name {}` sends it again, stored at most once",
                    p.group.name,
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
    /// Whether output is for a person at a terminal (local times) or a script (RFC 3339).
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

impl Shell {
    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| errinput!("the network thread has stopped"))?;
        match self.doorbell.send("", zmq::DONTWAIT) {
            // A full doorbell has rung already.
            Ok(()) | Err(zmq::Error::EAGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `f` on the network thread and waits for its result.
    fn ask<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::channel();
        self.submit(Job::Ask(Box::new(move |session| drop(tx.send(f(session))))))?;
        // Every request inside has its own timeouts; this bound only guards against a bug.
        rx.recv_timeout(Duration::from_secs(120))
            .map_err(|_| Error::Timeout("no answer from the network thread".into()))?
    }

    fn read_loop(&mut self, input: &mut Input) -> Result<()> {
        loop {
            let prompt = self.view().prompt(&self.style);
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
                Ok(line) => self.execute(line),
                Err(usage) => say!("{}", safe::field(&usage)),
            }
        }
    }

    /// The original numbered menu. Returns false when the user chose Quit.
    fn menu(&mut self, input: &mut Input) -> Result<bool> {
        say!("{MENU}");
        let plain = |q: &str| (q.to_string(), q.to_string());
        let Some(choice) = input.read(&plain("choose 1-6: "), false)? else {
            return Ok(false);
        };
        let mut ask = |q: &str| -> Result<String> {
            Ok(input
                .read(&plain(q), false)?
                .unwrap_or_default()
                .trim()
                .to_string())
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
                say!("'{}' is not on the menu", safe::field(other));
                return Ok(true);
            }
        };
        self.execute(line);
        Ok(true)
    }

    /// Carries out one line, printing the outcome or one line of error.
    fn execute(&mut self, line: Line) {
        if let Err(err) = self.try_execute(line) {
            say!("{}", self.style.error(&format!("error: {err}")));
        }
    }

    fn try_execute(&mut self, line: Line) -> Result<()> {
        match line {
            Line::Empty => {}
            Line::Say(text) => {
                protocol::check_text(&text).map_err(|why| errinput!("not sent: {why}"))?;
                let group = self.require_current()?;
                self.submit(Job::Say(group, text))?;
            }
            Line::List => {
                let groups = self.ask(|s| s.list_groups())?;
                self.view()
                    .set_listed(groups.iter().map(|g| g.name.clone()));
                self.print_groups(&groups);
            }
            Line::Join(spec) => {
                let (group, last_seq) = self.ask(move |s| {
                    let group = s.resolve(&spec)?;
                    let last = s.join(&group)?;
                    Ok((group, last))
                })?;
                let shown = safe::field(&group.to_string()).into_owned();
                match last_seq {
                    0 => say!("joined {shown}: no messages yet"),
                    1 => say!("joined {shown}: 1 earlier message (/history shows it)"),
                    n => say!("joined {shown}: {n} earlier messages (/history shows them)"),
                }
                self.view().join(group);
            }
            Line::Leave(spec) => {
                let group = match spec {
                    Some(spec) => self.joined_or_resolve(spec)?,
                    None => self.require_current()?,
                };
                let target = group.clone();
                self.ask(move |s| s.leave(&target))?;
                say!("left {}", safe::field(&group.to_string()));
                self.view().leave(&group);
            }
            Line::Switch(spec) => {
                let group = self.view().find_joined(&spec).ok_or_else(|| {
                    errinput!("not joined to '{spec}' in this session; /join it first")
                })?;
                say!("now in {}", safe::field(&group.to_string()));
                self.view().switch(group);
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
                self.print_history(&group, &messages);
            }
            Line::Who(spec) => {
                let group = match spec {
                    Some(spec) => self.joined_or_resolve(spec)?,
                    None => self.require_current()?,
                };
                let target = group.clone();
                let members = self.ask(move |s| s.members(&target))?;
                self.view()
                    .set_members(members.iter().map(|m| m.name.clone()));
                self.print_members(&group, &members);
            }
            Line::Invite(key) => {
                let group = self.require_current()?;
                let (target, invited) = (group.clone(), key.clone());
                self.ask(move |s| s.invite(&target, &invited))?;
                say!(
                    "invited {} into {}",
                    safe::field(&key),
                    safe::field(&group.to_string())
                );
            }
            Line::Help => say!("{HELP}"),
            Line::Menu | Line::Quit => {}
        }
        Ok(())
    }

    /// A joined group by name, or else whatever the name resolves to.
    fn joined_or_resolve(&self, spec: String) -> Result<GroupRef> {
        // Bound first: the view must not stay locked while the network thread works.
        let joined = self.view().find_joined(&spec);
        match joined {
            Some(group) => Ok(group),
            None => self.ask(move |s| s.resolve(&spec)),
        }
    }

    fn require_current(&self) -> Result<GroupRef> {
        self.view()
            .current()
            .cloned()
            .ok_or_else(|| errinput!("no current group; /join one first (/list shows them)"))
    }

    fn print_groups(&self, groups: &[GroupEntry]) {
        if groups.is_empty() {
            say!("no groups are registered with the message server");
        }
        let joined: Vec<GroupRef> = self.view().joined().to_vec();
        for g in groups {
            let joined = joined
                .iter()
                .any(|j| j.name == g.name && j.address == g.address);
            say!(
                "  {:<20} {}{}",
                safe::field(&g.name),
                safe::field(&g.address),
                if joined { "  (joined)" } else { "" }
            );
        }
    }

    fn print_history(&self, group: &GroupRef, messages: &[Message]) {
        if messages.is_empty() {
            say!("no messages in {}", safe::field(&group.name));
        }
        let now = time::now_ms();
        for m in messages {
            if self.terminal {
                say!("{}", self.style.history(m, now));
            } else {
                say!("{}", render::plain_history(m));
            }
        }
    }

    fn print_members(&self, group: &GroupRef, members: &[Member]) {
        let online = members.iter().filter(|m| m.online).count();
        let s = if members.len() == 1 { "" } else { "s" };
        say!(
            "{} member{s} of {}, {online} online:",
            members.len(),
            safe::field(&group.name)
        );
        for m in members {
            say!("{}", self.style.member(m));
        }
    }
}
