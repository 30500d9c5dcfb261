//! `zms user` in a real terminal, used as a person would: tmux runs it, `send-keys` types and
//! `capture-pane` reads the screen. Waits poll the screen until the expected text shows or a
//! deadline passes.
//!
//! Without tmux these tests print "skipped: tmux not installed" and pass, unless
//! `ZMS_REQUIRE_TMUX=1` (as CI sets), when they fail instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{deploy, start_group, Proc, RogueGroup, HOSTILE_GROUP, ZMS};

/// How long the screen may take to show what is expected.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long for what waits out a client's timeouts (a silent server: 3 tries of 2 s).
const LONG_DEADLINE: Duration = Duration::from_secs(60);

/// Whether tmux runs here; without it, a test skips (or fails when CI requires tmux).
fn tmux_available() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("ZMS_REQUIRE_TMUX").as_deref() != Ok("1"),
            "tmux is required (ZMS_REQUIRE_TMUX=1) but not installed"
        );
        println!("skipped: tmux not installed");
    }
    found
}

/// A tmux server of its own (`tmux -L NAME`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Tmux {
            socket: format!(
                "zms-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts `command` (already shell-quoted) in a new 120x40 window `session`; the pane stays
    /// after the program exits, so its last words can be read.
    fn start(&self, session: &str, command: &str) {
        self.start_sized(session, command, 120);
    }

    /// As [`Tmux::start`], `columns` wide.
    fn start_sized(&self, session: &str, command: &str, columns: u16) {
        let columns = columns.to_string();
        self.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            &columns,
            "-y",
            "40",
            command,
        ]);
        self.run(&["set-option", "-t", session, "remain-on-exit", "on"]);
    }

    /// Types `text` literally.
    fn type_text(&self, session: &str, text: &str) {
        self.run(&["send-keys", "-t", session, "-l", text]);
    }

    /// Types `text` and presses Enter, as a person enters a line.
    fn enter_line(&self, session: &str, text: &str) {
        self.type_text(session, text);
        self.press(session, &["Enter"]);
    }

    /// Starts `zms user` as alice (no colour) in `session` and joins general.
    fn start_joined(&self, session: &str, server: &str, home: &Path) {
        self.start(session, &user_command(server, home, false));
        self.wait_for(session, "connected to");
        self.enter_line(session, "/join general");
        self.wait_for(session, "joined general@");
    }

    /// Presses keys by tmux name: Enter, Tab, Up, C-u, …
    fn press(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend(keys);
        self.run(&args);
    }

    /// The screen and the scrollback above it, as text.
    fn screen(&self, session: &str) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", session, "-S", "-1000"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen with colours and attributes as escape codes.
    fn screen_with_codes(&self, session: &str) -> String {
        let out = self.run(&["capture-pane", "-p", "-e", "-t", session, "-S", "-1000"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until `check` holds; fails with the screen after the deadline.
    fn wait_until(&self, session: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        self.poll_screen(session, what, check, DEADLINE, Duration::from_millis(50))
    }

    /// As [`Tmux::wait_until`], with a longer deadline for what takes a client's timeouts.
    fn wait_long(&self, session: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        self.poll_screen(
            session,
            what,
            check,
            LONG_DEADLINE,
            Duration::from_millis(200),
        )
    }

    /// Reads the screen every `pause` until `check` holds, for at most `limit`.
    fn poll_screen(
        &self,
        session: &str,
        what: &str,
        check: impl Fn(&str) -> bool,
        limit: Duration,
        pause: Duration,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen(session);
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(pause);
        }
    }

    /// Polls until `text` is on the screen.
    fn wait_for(&self, session: &str, text: &str) -> String {
        self.wait_until(session, &format!("{text:?}"), |s| s.contains(text))
    }

    /// The window's title, as the program set it.
    fn title(&self, session: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", session, "#{pane_title}"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Polls until the program in `session` has exited.
    fn wait_exit(&self, session: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = self.run(&["display-message", "-p", "-t", session, "#{pane_dead}"]);
            if String::from_utf8_lossy(&out.stdout).trim() == "1" {
                return;
            }
            assert!(Instant::now() < deadline, "zms user did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// A one-shot `zms` command as another user; must succeed.
fn zms(args: &[&str]) {
    let out = Command::new(ZMS).args(args).output().expect("zms runs");
    assert!(
        out.status.success(),
        "zms {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell command running `zms user` as alice with its own HOME and config directory.
fn user_command(server: &str, home: &Path, colour: bool) -> String {
    format!(
        "{} --name alice",
        user_command_unnamed(server, home, colour)
    )
}

/// As [`user_command`], without a name (it is asked for), and no log settings inherited.
fn user_command_unnamed(server: &str, home: &Path, colour: bool) -> String {
    let config: PathBuf = home.join("config");
    let colour = if colour { "-u NO_COLOR" } else { "NO_COLOR=1" };
    format!(
        "env -u ZMS_NAME -u ZMS_LOG {colour} HOME={} XDG_CONFIG_HOME={} XDG_STATE_HOME={} {} user --server {}",
        quote(home.to_str().unwrap()),
        quote(config.to_str().unwrap()),
        quote(config.to_str().unwrap()),
        quote(ZMS),
        quote(server)
    )
}

/// A one-shot `zms` command; its stdout.
fn zms_out(args: &[&str]) -> String {
    let out = Command::new(ZMS).args(args).output().expect("zms runs");
    assert!(
        out.status.success(),
        "zms {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The last input line on the screen, from its prompt on.
fn input_line(screen: &str) -> String {
    screen
        .lines()
        .rev()
        .map(str::trim_end)
        .find(|l| {
            *l == ">"
                || l.starts_with("> ")
                || l.starts_with('[') && (l.contains("]> ") || l.ends_with("]>"))
        })
        .unwrap_or_default()
        .to_string()
}

/// The lines after the last one equal to `line`.
fn after<'a>(screen: &'a str, line: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    let at = lines
        .iter()
        .rposition(|l| *l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in:\n{screen}"));
    lines[at + 1..].to_vec()
}

#[test]
fn a_person_chats_in_the_terminal() {
    if !tmux_available() {
        return;
    }
    let d = deploy();
    let s = d.server.as_str();
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    tmux.start(w, &user_command(s, home.path(), true));
    tmux.wait_for(w, &format!("connected to {s} as alice"));

    // /list, then /join completed with Tab from the listed names.
    tmux.enter_line(w, "/list");
    tmux.wait_for(w, &format!("  random               {}", d.group_address));
    tmux.type_text(w, "/jo");
    tmux.press(w, &["Tab"]);
    tmux.wait_until(w, "/join completed", |s| input_line(s) == "> /join");
    tmux.type_text(w, "gen");
    tmux.press(w, &["Tab"]);
    tmux.wait_until(w, "general completed", |s| {
        input_line(s) == "> /join general"
    });
    tmux.press(w, &["Enter"]);
    tmux.wait_for(w, &format!("joined general@{}", d.group_address));

    // Others joining show as one quiet line; one's own message comes back live.
    zms(&["join", "general", "--server", s, "--name", "bob"]);
    tmux.wait_for(w, "-- bob joined general");
    tmux.enter_line(w, "hello from alice");
    tmux.wait_for(w, " alice: hello from alice");
    // Lines typed ahead of the next prompt (as a paste arrives) are all kept.
    tmux.press(w, &["fast one", "Enter", "fast two", "Enter"]);
    tmux.wait_for(w, " alice: fast two");
    tmux.wait_for(w, " alice: fast one");

    // A message arriving while a line is half typed prints above it; the line stays intact.
    tmux.type_text(w, "half-typed wor");
    tmux.wait_until(w, "the half-typed line", |s| {
        input_line(s) == "[general]> half-typed wor"
    });
    zms(&[
        "send", "general", "hi alice", "--server", s, "--name", "bob",
    ]);
    let screen = tmux.wait_for(w, " bob: hi alice");
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    let bob_line = lines
        .iter()
        .rposition(|l| l.ends_with(" bob: hi alice"))
        .unwrap();
    let input_at = lines
        .iter()
        .rposition(|l| *l == "[general]> half-typed wor")
        .unwrap_or_else(|| panic!("the typed line was garbled:\n{screen}"));
    assert!(
        bob_line < input_at,
        "the message prints above the input:\n{screen}"
    );
    let time = lines[bob_line];
    assert!(
        time.as_bytes()[2] == b':' && time.as_bytes()[5] == b':',
        "HH:MM:SS first: {time}"
    );
    // The sender's name is in its colour.
    let colour = zms::user::render::sender_colour("bob");
    assert!(
        tmux.screen_with_codes(w)
            .contains(&format!("\x1b[{colour}mbob\x1b[39m: hi alice")),
        "bob in colour {colour}:\n{:?}",
        tmux.screen_with_codes(w)
    );
    tmux.enter_line(w, "ds");
    tmux.wait_for(w, " alice: half-typed words");

    // In another group, news from general is labelled and counted in the status row.
    tmux.enter_line(w, "/join random");
    tmux.wait_for(w, &format!("joined random@{}", d.group_address));
    zms(&["send", "general", "psst", "--server", s, "--name", "bob"]);
    tmux.wait_for(w, " [general] bob: psst");
    tmux.wait_until(w, "general(1) under the input", |s| {
        let lines: Vec<&str> = s.lines().map(str::trim).collect();
        let at = lines.iter().rposition(|l| l.starts_with("[random]>"));
        at.is_some_and(|i| lines.get(i + 1) == Some(&"general(1)"))
    });

    // Switching (completed with Tab) reads the group: the count is gone.
    tmux.type_text(w, "/g gen");
    tmux.press(w, &["Tab", "Enter"]);
    tmux.wait_for(w, &format!("now in general@{}", d.group_address));
    tmux.wait_until(w, "the count cleared", |s| {
        input_line(s) == "[general]>" && !s.contains("general(1)")
    });

    // /me shows as an action, live and in /history.
    tmux.enter_line(w, "/me waves");
    tmux.wait_for(w, " * alice waves");
    tmux.enter_line(w, "/history 10");
    // Until the prompt is back under the history: before that, the lines below it are blank.
    let screen = tmux.wait_until(w, "the history", |s| {
        s.lines().any(|l| l.trim_end() == "[general]> /history 10") && {
            let below = after(s, "[general]> /history 10");
            below.iter().any(|l| l.ends_with("* alice waves"))
                && below.iter().any(|l| l.starts_with("[general]>"))
        }
    });
    let history: Vec<String> = after(&screen, "[general]> /history 10")
        .iter()
        .take_while(|l| !l.starts_with('['))
        .map(|l| l.split_once(' ').map_or("", |x| x.1).to_string())
        .collect();
    assert_eq!(
        history,
        [
            "alice: hello from alice",
            "alice: fast one",
            "alice: fast two",
            "bob: hi alice",
            "alice: half-typed words",
            "bob: psst",
            "* alice waves"
        ],
        "{screen}"
    );

    // /who names the members and who is online.
    tmux.enter_line(w, "/who");
    let screen = tmux.wait_until(w, "the member list", |s| {
        s.contains("2 members of general, 1 online:")
            && after(s, "[general]> /who")
                .iter()
                .any(|l| l.starts_with("[general]>"))
    });
    let who = after(&screen, "[general]> /who");
    assert_eq!(who[1..3], ["  alice (online)", "  bob"], "{screen}");

    tmux.enter_line(w, "/leave random");
    tmux.wait_for(w, &format!("left random@{}", d.group_address));
    tmux.enter_line(w, "/quit");
    tmux.wait_exit(w);

    // The input history is kept across runs: Up brings back the last lines.
    let history = std::fs::read_to_string(home.path().join("config/zms/history")).unwrap();
    assert!(history.contains("hello from alice"), "{history}");
    let again = "again";
    tmux.start(again, &user_command(s, home.path(), true));
    tmux.wait_for(again, "connected to");
    tmux.press(again, &["Up"]);
    tmux.wait_until(again, "/quit recalled", |s| input_line(s) == "> /quit");
    tmux.press(again, &["Up"]);
    tmux.wait_until(again, "/leave recalled", |s| {
        input_line(s) == "> /leave random"
    });
    // Ctrl-D on an empty line quits.
    tmux.press(again, &["C-u", "C-d"]);
    tmux.wait_exit(again);
}

#[test]
fn messages_typed_while_the_server_is_away_are_sent_when_it_is_back() {
    if !tmux_available() {
        return;
    }
    let mut d = deploy();
    let s = d.server.clone();
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    tmux.start_joined(w, &s, home.path());

    d.group.signal("-KILL");
    d.group.wait();
    tmux.wait_for(
        w,
        &format!(
            "-- {} (general) is not answering; reconnecting…",
            d.group_address
        ),
    );
    tmux.wait_until(w, "reconnecting… under the input", |s| {
        s.lines()
            .any(|l| l.trim() == format!("reconnecting… {}", d.group_address))
    });
    for text in ["first while away", "second while away"] {
        tmux.enter_line(w, text);
    }
    tmux.wait_for(w, "message kept (2 waiting), sent when it is back");
    tmux.wait_until(w, "2 queued under the input", |s| {
        s.lines().any(|l| l.trim().ends_with("· 2 queued"))
    });

    // Back on the same address and data: both go, in order, once each.
    let restarted = start_group(&s, &d.group_address, d.data.path());
    assert_eq!(restarted.listening(), d.group_address);
    let screen = tmux.wait_for(w, "alice: second while away");
    let lines: Vec<&str> = screen.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.ends_with("alice: first while away"))
        .unwrap();
    let second = lines
        .iter()
        .position(|l| l.ends_with("alice: second while away"))
        .unwrap();
    assert!(first < second, "{screen}");
    assert!(screen.contains(&format!("-- {} (general) is back", d.group_address)));
    assert!(screen.contains("-- sent 2 kept messages"));
    assert_eq!(
        screen.matches("alice: first while away").count(),
        1,
        "{screen}"
    );

    // NO_COLOR: not one colour or attribute code on the screen.
    let codes = tmux.screen_with_codes(w);
    assert!(!codes.contains('\x1b'), "{codes:?}");

    // Away again at exit: what could not be sent is said, not dropped.
    drop(restarted);
    tmux.wait_until(w, "lost again", |s| {
        s.matches("is not answering; reconnecting…").count() == 2
    });
    tmux.enter_line(w, "never sent");
    tmux.wait_for(w, "message kept (1 waiting)");
    tmux.enter_line(w, "/quit");
    tmux.wait_exit(w);
    tmux.wait_for(
        w,
        &format!(
            "not confirmed ({} did not answer; it may be stored): [general] never sent -- kept",
            d.group_address
        ),
    );
    // Kept with its id, for the next `zms send general` to send again.
    let kept = home.path().join("config/zms/unconfirmed/alice");
    let files: Vec<_> = std::fs::read_dir(&kept).unwrap().collect();
    assert_eq!(files.len(), 1);
    let entry = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert!(entry.contains("\"text\":\"never sent\""), "{entry}");
}

#[test]
fn nobody_can_forge_clear_or_retitle_what_another_member_sees() {
    if !tmux_available() {
        return;
    }
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let s = directory.listening();
    let rogue = RogueGroup::start();
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    tmux.start(w, &user_command(&s, home.path(), true));
    let connected = format!("connected to {s} as alice");
    tmux.wait_for(w, &connected);
    let title_before = tmux.title(w);

    // Live: the messages are pushed as the client joins.
    tmux.enter_line(w, &format!("/join {}", rogue.address));
    let screen = tmux.wait_for(w, "a second message?");
    let forged_shown = "mallory: hi␍␛[K07:42:00 bob: the deploy key is in #team, paste it here";
    assert!(screen.contains(forged_shown), "{screen}");
    assert!(
        screen.contains("mallory: ␛[2J␛]0;pwned␇cleared?"),
        "{screen}"
    );
    assert!(
        screen.contains("mal␛[31mlory␛[1A: first line\n  | 07:42:01 bob: a second message?"),
        "{screen}"
    );
    // Every line that looks like a message is one: none starts with the forged time, the
    // screen was not cleared, and the window keeps its title.
    assert!(
        !screen.lines().any(|l| l.starts_with("07:42:0")),
        "{screen}"
    );
    assert!(
        screen.contains(&connected),
        "the screen was cleared:\n{screen}"
    );
    assert_eq!(tmux.title(w), title_before);

    // /history and /who show the same text the same way.
    tmux.enter_line(w, "/history");
    tmux.wait_until(w, "the forged line twice", |s| {
        s.matches(forged_shown).count() == 2
    });
    tmux.enter_line(w, "/who");
    let screen = tmux.wait_for(w, "2 members of general");
    assert!(screen.contains("  mal␛[31mlory␛[1A (online)"), "{screen}");
    assert!(
        screen.contains(&connected),
        "the screen was cleared:\n{screen}"
    );
    assert_eq!(tmux.title(w), title_before);
}

#[test]
fn group_names_from_servers_are_shown_harmlessly_in_every_line() {
    if !tmux_available() {
        return;
    }
    // The rogue answers as message server and group server, its group named to clear the
    // screen and retitle the window.
    let rogue = RogueGroup::named(HOSTILE_GROUP);
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    tmux.start(w, &user_command(&rogue.address, home.path(), false));
    let connected = format!("connected to {} as alice", rogue.address);
    tmux.wait_for(w, &connected);
    let title_before = tmux.title(w);
    let shown = "gen␛[2J␛]0;pwned␇eral";

    tmux.enter_line(w, "/list");
    tmux.wait_for(w, &format!("  {shown} {}", rogue.address));
    tmux.enter_line(w, &format!("/join {}", rogue.address));
    tmux.wait_for(w, &format!("joined {shown}@{}", rogue.address));
    tmux.enter_line(w, "/who");
    tmux.wait_for(w, &format!("2 members of {shown}, 1 online:"));
    tmux.enter_line(w, "/leave");
    let screen = tmux.wait_for(w, &format!("left {shown}@{}", rogue.address));
    assert!(
        screen.contains(&connected),
        "the screen was cleared:\n{screen}"
    );
    assert_eq!(tmux.title(w), title_before);
}

#[test]
fn an_empty_message_is_refused_with_a_clear_line() {
    if !tmux_available() {
        return;
    }
    let d = deploy();
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    tmux.start_joined(w, &d.server, home.path());
    tmux.enter_line(w, "   ");
    tmux.wait_for(
        w,
        "error: not sent: message is empty (or only spaces); nothing to send",
    );
    tmux.enter_line(w, "/history");
    tmux.wait_for(w, "no messages in general");
}

#[test]
fn a_membership_ended_elsewhere_ends_in_one_line_and_logs_stay_off_the_screen() {
    if !tmux_available() {
        return;
    }
    let d = deploy();
    let s = d.server.as_str();
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    tmux.start_joined(w, s, home.path());

    // alice leaves from another shell: the client says so once and lets the group go.
    zms(&["leave", "general", "--server", s, "--name", "alice"]);
    let ended = format!(
        "-- you are no longer a member of general@{} (left elsewhere, or removed)",
        d.group_address
    );
    tmux.wait_for(w, &ended);
    // A line after it: by then a client still trying to follow the group would have logged
    // over the prompt. /help says where the log goes instead.
    tmux.enter_line(w, "/help");
    let log = home.path().join("config/zms/user.log");
    let told = format!("log: warnings go to {}", log.display());
    let screen = tmux.wait_until(w, "the log file and a prompt without a group", |s| {
        s.contains(&told) && input_line(s) == ">"
    });
    assert_eq!(screen.matches(&ended).count(), 1, "{screen}");
    assert!(
        !screen.contains("WARN"),
        "a log line on the screen:\n{screen}"
    );
    tmux.enter_line(w, "/leave general");
    tmux.wait_for(w, "error: 'alice' is not a member of 'general'");
    tmux.enter_line(w, "/quit");
    tmux.wait_exit(w);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!logged.contains("resubscribe failed"), "{logged}");
}

#[test]
fn typing_goes_on_while_a_join_waits_for_a_silent_server() {
    if !tmux_available() {
        return;
    }
    let d = deploy();
    // A port that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let spec = format!("general@{}", silent.local_addr().unwrap());
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    tmux.start(w, &user_command(&d.server, home.path(), false));
    tmux.wait_for(w, "connected to");
    tmux.enter_line(w, &format!("/join {spec}"));
    // The prompt is back with the first key, the line intact, the join shown under way.
    tmux.type_text(w, "still typing");
    let screen = tmux.wait_until(w, "the line typed during the join", |s| {
        input_line(s) == "> still typing"
    });
    assert!(
        screen.contains(&format!("joining {spec}…")),
        "the join under way:\n{screen}"
    );
    // It fails in its own time, above the line, which stays as typed.
    tmux.wait_long(w, "the join failing", |s| {
        s.contains("error: no answer from the group server") && input_line(s) == "> still typing"
    });
    tmux.type_text(w, " on");
    tmux.wait_until(w, "typing on", |s| input_line(s) == "> still typing on");
    tmux.press(w, &["C-u"]);
    tmux.enter_line(w, "/join general");
    tmux.wait_until(w, "the group's prompt", |s| input_line(s) == "[general]>");
    tmux.enter_line(w, "/quit");
    tmux.wait_exit(w);
}

#[test]
fn a_long_paste_is_sent_intact_and_the_prompt_stays_usable() {
    if !tmux_available() {
        return;
    }
    let d = deploy();
    let s = d.server.as_str();
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    // Wide: the editor redraws the whole line each time it wraps to a new row, so fewer rows
    // keep this test short in a debug build; the paths taken are the same.
    tmux.start_sized(w, &user_command(s, home.path(), false), 400);
    tmux.wait_for(w, "connected to");
    tmux.enter_line(w, "/join general");
    tmux.wait_for(w, "joined general@");
    zms(&["join", "general", "--server", s, "--name", "bob"]);

    // 60,000 characters, pasted as a terminal without bracketed paste delivers them: as keys.
    let text: String = (0..60_000)
        .map(|i| char::from(b"abcdefghij klmnopqrstuvwxyz0123456789"[i % 37]))
        .collect();
    let file = home.path().join("paste.txt");
    std::fs::write(&file, &text).unwrap();
    tmux.run(&["load-buffer", file.to_str().unwrap()]);
    tmux.run(&["paste-buffer", "-t", w]);
    tmux.press(w, &["Enter"]);
    let history = |limit: &str| {
        zms_out(&[
            "history", "general", "--server", s, "--name", "bob", "--json", "--limit", limit,
        ])
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let sent = loop {
        let last = history("1");
        if let Some(line) = last.lines().next() {
            break serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert!(Instant::now() < deadline, "the paste was never sent");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(sent["sender"], "alice");
    assert!(sent["text"] == text.as_str(), "the paste arrived changed");

    // The prompt takes the next line as usual.
    tmux.enter_line(w, "after the paste");
    tmux.wait_long(w, "the next message", |s| {
        s.contains(" alice: after the paste")
    });
    assert_eq!(history("5").lines().count(), 2, "one message each");
}

#[test]
fn the_menu_stays_a_menu_until_left() {
    if !tmux_available() {
        return;
    }
    let d = deploy();
    let s = d.server.as_str();
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    tmux.start_joined(w, s, home.path());
    tmux.enter_line(w, "/menu");
    tmux.wait_for(w, "7. Leave the menu");
    let choose = |s: &str| input_line_menu(s);
    tmux.wait_until(w, "the menu's question", choose);

    // One number after another chooses actions; an empty answer asks again.
    tmux.enter_line(w, "1");
    tmux.wait_for(w, &format!("  general              {}", d.group_address));
    tmux.press(w, &["Enter"]);
    tmux.enter_line(w, "4");
    tmux.wait_until(w, "the message question", |s| {
        s.lines().map(str::trim_end).rfind(|l| !l.is_empty()) == Some("message:")
    });
    tmux.enter_line(w, "sent from the menu");
    tmux.wait_for(w, " alice: sent from the menu");
    tmux.wait_until(w, "the menu's question again", choose);
    tmux.enter_line(w, "7");
    tmux.wait_for(w, "back to the chat prompt");
    tmux.enter_line(w, "after the menu");
    tmux.wait_for(w, " alice: after the menu");

    let history = zms_out(&["history", "general", "--server", s, "--name", "alice"]);
    let texts: Vec<&str> = history
        .lines()
        .map(|l| l.split_once(" alice: ").unwrap().1)
        .collect();
    assert_eq!(texts, ["sent from the menu", "after the menu"], "{history}");
}

/// Whether the last prompt on the screen is the menu's question.
fn input_line_menu(screen: &str) -> bool {
    screen
        .lines()
        .rev()
        .map(str::trim_end)
        .find(|l| !l.is_empty())
        .is_some_and(|l| l == "choose 1-7:")
}

#[test]
fn an_empty_answer_asks_again() {
    if !tmux_available() {
        return;
    }
    let d = deploy();
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "nameless";
    tmux.start(w, &user_command_unnamed(&d.server, home.path(), false));
    tmux.wait_for(w, "Your name:");
    tmux.press(w, &["Enter"]);
    tmux.wait_until(w, "the question again", |s| {
        s.contains("'Your name' needs an answer") && s.trim_end().ends_with("Your name:")
    });
    tmux.enter_line(w, "carol");
    tmux.wait_for(w, "as carol;");
    tmux.enter_line(w, "/quit");
    tmux.wait_exit(w);
}

#[test]
fn direct_messages_and_mentions_in_the_terminal() {
    if !tmux_available() {
        return;
    }
    let d = deploy();
    let s = d.server.as_str();
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    tmux.start(w, &user_command(s, home.path(), true));
    tmux.wait_for(w, "connected to");
    tmux.enter_line(w, "/join general");
    tmux.wait_for(w, "joined general@");
    zms(&["join", "general", "--server", s, "--name", "bob"]);

    // A mention of alice stands out (reverse video), and rings the bell.
    zms(&[
        "send",
        "general",
        "hello @alice",
        "--server",
        s,
        "--name",
        "bob",
    ]);
    tmux.wait_for(w, " bob: hello @alice");
    let codes = tmux.screen_with_codes(w);
    assert!(
        codes.contains("\u{1b}[7m@alice"),
        "not highlighted:\n{codes}"
    );
    let bell = tmux.run(&["display-message", "-p", "-t", w, "#{window_bell_flag}"]);
    assert_eq!(String::from_utf8_lossy(&bell.stdout).trim(), "1", "no bell");

    // /msg writes to bob alone; bob reads it in their conversation.
    tmux.enter_line(w, "/msg bob see you at noon");
    tmux.wait_for(w, " [@bob] alice: see you at noon");
    let read = zms_out(&["history", "@alice", "--server", s, "--name", "bob"]);
    assert!(read.ends_with(" alice: see you at noon\n"), "{read}");

    // /query makes the conversation current; general's mentions count apart.
    tmux.enter_line(w, "/query bob");
    tmux.wait_until(w, "the conversation current", |s| {
        input_line(s) == "[@bob]>"
    });
    zms(&[
        "send",
        "general",
        "@alice look",
        "--server",
        s,
        "--name",
        "bob",
    ]);
    zms(&[
        "send",
        "general",
        "just chatting",
        "--server",
        s,
        "--name",
        "bob",
    ]);
    tmux.wait_for(w, " [general] bob: just chatting");
    tmux.wait_for(w, "general(2,@1)");
    tmux.enter_line(w, "now you know");
    tmux.wait_for(w, " alice: now you know");

    // A conversation carol begins shows up by itself, from its first message.
    zms(&[
        "dm",
        "alice",
        "knock knock",
        "--server",
        s,
        "--name",
        "carol",
    ]);
    tmux.wait_long(w, "carol's conversation", |s| {
        s.contains("-- carol began a conversation with you (/query carol)")
            && s.contains(" [@carol] carol: knock knock")
    });
    tmux.wait_for(w, "@carol(1)");

    // /mentions lists them over the groups, with where each was.
    tmux.enter_line(w, "/mentions");
    let mentions = |screen: &str| -> Vec<String> {
        after(screen, "[@bob]> /mentions")
            .into_iter()
            .filter(|l| l.starts_with("[general] "))
            .map(str::to_string)
            .collect()
    };
    let screen = tmux.wait_until(w, "two mentions listed", |s| mentions(s).len() == 2);
    let listed = mentions(&screen);
    assert!(listed[0].ends_with(" bob: hello @alice"), "{screen}");

    // With --quiet, bob's client shows the same without a bell.
    let b = "bob";
    let quiet = format!(
        "{} --name bob --quiet",
        user_command_unnamed(s, home.path(), true)
    );
    tmux.start(b, &quiet);
    tmux.wait_for(b, "connected to");
    // Conversations from before the client started are named once.
    tmux.wait_for(b, "-- your conversations: @alice (/query NAME shows one)");
    tmux.enter_line(b, "/query alice");
    tmux.wait_for(b, "now talking with @alice");
    tmux.enter_line(w, "@bob are you there?");
    tmux.wait_for(b, " alice: @bob are you there?");
    let bell = tmux.run(&["display-message", "-p", "-t", b, "#{window_bell_flag}"]);
    assert_eq!(String::from_utf8_lossy(&bell.stdout).trim(), "0", "a bell");
}

#[test]
fn a_group_whose_server_dies_is_followed_to_its_new_owner_in_one_line() {
    if !tmux_available() {
        return;
    }
    let Some(pg) = common::postgres::Postgres::start() else {
        return;
    };
    let url = pg.database("moving");
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let s = directory.listening();
    let cluster_server = |groups: &[&str]| {
        let mut args = vec!["group-server", "--server", &s, "--bind", "127.0.0.1:0"];
        args.extend(["--store", &url, "--lease-ms", "2000"]);
        for g in groups {
            args.extend(["--group", g]);
        }
        let server = Proc::spawn(&args);
        let address = server.listening();
        (server, address)
    };
    // The first server owns general (it is alone when it starts); the second takes over.
    let (first, old) = cluster_server(&["general"]);
    let (_second, new) = cluster_server(&[]);
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    tmux.start_joined(w, &s, home.path());

    first.signal("-KILL");
    let moved = format!("-- general moved to {new}");
    tmux.wait_long(w, &moved, |screen| screen.contains(&moved));
    tmux.enter_line(w, "after the move");
    let screen = tmux.wait_long(w, "the message echoed", |screen| {
        screen.contains("alice: after the move")
    });
    assert_eq!(screen.matches(&moved).count(), 1, "{screen}");
    assert!(
        !screen.contains(&format!("joined general@{new}")),
        "no action needed: {screen}"
    );
    assert!(
        screen.contains(&format!("joined general@{old}")),
        "{screen}"
    );
    tmux.wait_until(w, "the prompt shows the group", |screen| {
        input_line(screen).starts_with("[general]>")
    });
}

#[test]
fn a_person_catches_up_searches_edits_and_deletes() {
    if !tmux_available() {
        return;
    }
    let d = deploy();
    let s = d.server.as_str();
    let as_user = |name: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", s, "--name", name]);
        zms(&all);
    };
    for (name, group) in [
        ("alice", "general"),
        ("alice", "random"),
        ("bob", "general"),
    ] {
        as_user(name, &["join", group]);
    }
    as_user("bob", &["join", "random"]);
    as_user("bob", &["send", "general", "lunch at noon?"]);
    as_user("bob", &["send", "general", "who is in?"]);
    as_user("bob", &["send", "random", "a cat picture"]);

    // Started, the client is in alice's groups at once and says what is new in each; the
    // first one shows its new messages under the marker, and they count as read.
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let w = "alice";
    tmux.start(w, &user_command(s, home.path(), false));
    let screen = tmux.wait_for(w, "who is in?");
    assert!(screen.contains("your groups:"), "{screen}");
    assert!(
        screen.contains("  general              2 new since you were last here"),
        "{screen}"
    );
    assert!(
        screen.contains("  random               1 new since you were last here"),
        "{screen}"
    );
    let new = after(&screen, "── new ──");
    assert!(new[0].ends_with("bob: lunch at noon?"), "{screen}");
    tmux.enter_line(w, "/unread");
    tmux.wait_until(w, "the counts after reading general", |s| {
        s.contains("  general              0 new") && s.contains("  random               1 new")
    });

    // Switching group shows the marker above what is new there.
    tmux.enter_line(w, "/g random");
    let screen = tmux.wait_for(w, "bob: a cat picture");
    assert!(
        after(&screen, "── new ──")[0].ends_with("bob: a cat picture"),
        "{screen}"
    );
    tmux.enter_line(w, "/g general");
    tmux.wait_for(w, "now in general@");

    // Search covers her groups, the words found marked by the client.
    tmux.enter_line(w, "/search LUNCH");
    tmux.wait_for(w, "[general] #1 bob: lunch at noon?");

    // Her last message, edited then deleted: every screen shows the change.
    tmux.enter_line(w, "teh typo");
    tmux.wait_for(w, "alice: teh typo");
    tmux.enter_line(w, "/edit the typo");
    tmux.wait_for(w, "alice edited #3: the typo (edited)");
    tmux.enter_line(w, "/edit 1 not mine");
    tmux.wait_for(
        w,
        "only its sender (bob) or an operator may change message 1",
    );
    tmux.enter_line(w, "/delete");
    tmux.wait_for(w, "alice deleted #3 (deleted)");
    let history = zms_out(&["history", "general", "--server", s, "--name", "bob"]);
    assert!(history.contains("#3 alice: (deleted)"), "{history}");

    // Back later: nothing is new, as she read it all here.
    tmux.enter_line(w, "/quit");
    tmux.wait_exit(w);
    let again = "again";
    tmux.start(again, &user_command(s, home.path(), false));
    tmux.wait_until(again, "the counts of a second start", |s| {
        s.contains("  general              nothing new")
            && s.contains("  random               nothing new")
    });
}
