//! What a typed line means: [`parse_line`] turns input into a [`Line`], and the help and menu
//! texts. Pure, so every form is tested here.

use super::render::ME_PREFIX;

/// A parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Empty,
    /// Text to send to the current group (a `/me` action is text starting with `/me `).
    Say(String),
    List,
    Join(String),
    Leave(Option<String>),
    Switch(String),
    /// The last N messages, or those since a TIME.
    History(HistoryRange),
    Who(Option<String>),
    /// Let a key into the current (private) group.
    Invite(String),
    /// Send text to a user in your conversation with them (`/msg NAME TEXT`).
    Msg(String, String),
    /// Make the conversation with a user the current one (`/query NAME`).
    Query(String),
    /// Recent messages that mention you, over your groups.
    Mentions,
    /// Search the user's groups for messages holding these words.
    Search(String),
    /// How many messages are new in each of the user's groups.
    Unread,
    /// Replace the text of message SEQ of the current group (`None`: the user's last one).
    Edit(Option<u64>, String),
    /// Delete message SEQ of the current group (`None`: the user's last one).
    Delete(Option<u64>),
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
pub const HISTORY_DEFAULT: u64 = 20;

/// The commands, as Tab completes them: a trailing space where an argument follows.
pub const COMMANDS: &[&str] = &[
    "/help",
    "/history ",
    "/invite ",
    "/join ",
    "/leave ",
    "/list",
    "/me ",
    "/mentions",
    "/menu",
    "/msg ",
    "/query ",
    "/quit",
    "/search ",
    "/unread",
    "/edit ",
    "/delete",
    "/switch ",
    "/g ",
    "/who ",
];

/// Parses one line of input.
///
/// # Errors
/// A one-line explanation for an unknown command or missing argument.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    // Only a bare Enter is nothing; spaces alone are a message, refused as empty when sent.
    if line.is_empty() {
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
    // Everything after the verb, spacing kept: the text of /send and /me.
    let text = command[verb.len()..].trim_start();
    Ok(match verb {
        "list" | "l" => Line::List,
        "join" | "j" => Line::Join(one("NAME | HOST:PORT | NAME@HOST:PORT")?),
        "leave" | "part" => Line::Leave(optional()),
        "switch" | "g" => Line::Switch(one("GROUP")?),
        "who" | "members" => Line::Who(optional()),
        "invite" => Line::Invite(one(&format!(
            "KEY (what `{} whoami` prints for the invited user)",
            crate::program::name()
        ))?),
        "history" | "h" => match rest.as_slice() {
            [] => Line::History(HistoryRange::Last(HISTORY_DEFAULT)),
            ["since", time @ ..] if !time.is_empty() => {
                Line::History(HistoryRange::Since(time.join(" ")))
            }
            [n] => match n.parse::<u64>() {
                Ok(n) => Line::History(HistoryRange::Last(n)),
                Err(_) => return Err("usage: /history [N | since TIME]".into()),
            },
            _ => return Err("usage: /history [N | since TIME]".into()),
        },
        "send" | "say" if text.is_empty() => return Err("usage: /send TEXT".into()),
        "send" | "say" => Line::Say(text.to_string()),
        "msg" | "m" => match text.split_once(char::is_whitespace) {
            Some((name, said)) if !said.trim().is_empty() => {
                Line::Msg(peer(name), said.trim_start().to_string())
            }
            _ => return Err("usage: /msg NAME TEXT".into()),
        },
        "query" => Line::Query(peer(&one("NAME")?)),
        "mentions" => Line::Mentions,
        "me" if text.is_empty() => return Err("usage: /me ACTION (shows as * you ACTION)".into()),
        "me" => Line::Say(format!("{ME_PREFIX}{text}")),
        "search" | "s" if text.is_empty() => return Err("usage: /search WORDS".into()),
        "search" | "s" => Line::Search(text.to_string()),
        "unread" => Line::Unread,
        "edit" => match seq_then(text) {
            (_, "") => return Err("usage: /edit [SEQ] TEXT (your last message, or #SEQ)".into()),
            (seq, text) => Line::Edit(seq, text.to_string()),
        },
        "delete" => match seq_then(text) {
            (seq, "") => Line::Delete(seq),
            _ => return Err("usage: /delete [SEQ] (your last message, or #SEQ)".into()),
        },
        "menu" => Line::Menu,
        "help" | "?" => Line::Help,
        "quit" | "exit" | "q" => Line::Quit,
        other => return Err(format!("unknown command /{other}; /help lists them")),
    })
}

/// A user as `/msg` and `/query` take one: `bob` or `@bob`.
fn peer(name: &str) -> String {
    name.strip_prefix('@').unwrap_or(name).to_string()
}

/// A leading `SEQ` or `#SEQ` followed by a space (or nothing), and the rest: `/edit 12 new
/// text` edits #12, `/edit new text` the last message.
fn seq_then(text: &str) -> (Option<u64>, &str) {
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    match first.strip_prefix('#').unwrap_or(first).parse::<u64>() {
        Ok(seq) if !first.is_empty() => (Some(seq), rest.trim_start()),
        _ => (None, text),
    }
}

/// What `/help` prints.
pub const HELP: &str = "\
commands:
  /list                        groups the message server knows
  /join NAME|HOST:PORT         join a group (by name, group server address, or NAME@HOST:PORT)
  /leave [GROUP]               leave the current (or named) group
  /switch GROUP  (/g)          make another joined group the current one
  /history [N | since TIME]    the last N (20) messages, or those since TIME (10m, 2h, RFC 3339)
  /who [GROUP]                 members, and who is online
  /me ACTION                   send an action: * you ACTION
  /msg NAME TEXT  (/m)         send TEXT to NAME alone, in your conversation with them
  /query NAME                  make your conversation with NAME the current one (@NAME)
  /mentions                    recent messages that mention you (@you), over your groups
  /invite KEY                  let a user's key into the current private group (secure servers)
  /search WORDS  (/s)          messages of your groups holding every word, newest last
  /unread                      how many messages are new in each of your groups
  /edit [SEQ] TEXT             replace your last message here (or #SEQ); all see (edited)
  /delete [SEQ]                delete your last message here (or #SEQ); all see (deleted)
  /menu                        the original numbered menu (7 leaves it)
  /quit                        leave the client (memberships stay)
  anything else                is sent to the current group (start with // to send a leading /)
keys: Tab completes commands, groups and names; Up/Down and Ctrl-R search earlier input;
      Ctrl-A/E/W/U/K edit as in a shell; Ctrl-D on an empty line quits.
below the input: unread messages in other groups (general(3,@1): 3, one mentioning you),
      servers being reconnected, queued messages. A mention or a direct message rings the bell.";

/// The original client's numbered menu, reachable with `/menu`: numbers choose actions until
/// 7 leaves it.
pub const MENU: &str = "\
1. Get the list of groups
2. Join a group (name or IP:port)
3. Leave the current group
4. Send a message to the current group
5. Receive messages from the current group (optionally since a time)
6. Quit
7. Leave the menu (back to the chat prompt)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_messages_and_mentions_parse() {
        assert_eq!(
            parse_line("/msg bob see  you"),
            Ok(Line::Msg("bob".into(), "see  you".into()))
        );
        assert_eq!(
            parse_line("/m @bob hi"),
            Ok(Line::Msg("bob".into(), "hi".into()))
        );
        assert!(parse_line("/msg bob").is_err());
        assert!(parse_line("/msg bob   ").is_err());
        assert_eq!(parse_line("/query @bob"), Ok(Line::Query("bob".into())));
        assert!(parse_line("/query").is_err());
        assert_eq!(parse_line("/q"), Ok(Line::Quit));
        assert_eq!(parse_line("/mentions"), Ok(Line::Mentions));
    }

    #[test]
    fn lines_parse_into_commands_or_text() {
        assert_eq!(
            parse_line("hello there"),
            Ok(Line::Say("hello there".into()))
        );
        // A bare number is text, not a menu choice.
        assert_eq!(parse_line("1"), Ok(Line::Say("1".into())));
        assert_eq!(parse_line(""), Ok(Line::Empty));
        assert_eq!(parse_line("  "), Ok(Line::Say("  ".into())));
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
        assert_eq!(
            parse_line("/leave random"),
            Ok(Line::Leave(Some("random".into())))
        );
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
        assert_eq!(parse_line("/who"), Ok(Line::Who(None)));
        assert_eq!(parse_line("/invite K"), Ok(Line::Invite("K".into())));
        assert!(parse_line("/invite")
            .unwrap_err()
            .contains("usage: /invite KEY"));
        assert_eq!(parse_line("/menu"), Ok(Line::Menu));
        assert_eq!(parse_line("/quit"), Ok(Line::Quit));
        assert!(parse_line("/join").unwrap_err().contains("usage"));
        assert!(parse_line("/history soon").unwrap_err().contains("usage"));
        assert!(parse_line("/frobnicate")
            .unwrap_err()
            .contains("unknown command"));
    }

    #[test]
    fn chat_commands_parse_with_or_without_a_seq() {
        assert_eq!(
            parse_line("/search lunch  plans"),
            Ok(Line::Search("lunch  plans".into()))
        );
        assert!(parse_line("/search")
            .unwrap_err()
            .contains("usage: /search"));
        assert_eq!(parse_line("/unread"), Ok(Line::Unread));
        assert_eq!(
            parse_line("/edit fixed it"),
            Ok(Line::Edit(None, "fixed it".into()))
        );
        assert_eq!(
            parse_line("/edit 12 fixed"),
            Ok(Line::Edit(Some(12), "fixed".into()))
        );
        assert_eq!(
            parse_line("/edit #12 fixed"),
            Ok(Line::Edit(Some(12), "fixed".into()))
        );
        assert!(parse_line("/edit").unwrap_err().contains("usage: /edit"));
        assert!(parse_line("/edit 12").unwrap_err().contains("usage: /edit"));
        assert_eq!(parse_line("/delete"), Ok(Line::Delete(None)));
        assert_eq!(parse_line("/delete #3"), Ok(Line::Delete(Some(3))));
        assert!(parse_line("/delete 3 x")
            .unwrap_err()
            .contains("usage: /delete"));
    }

    #[test]
    fn me_sends_an_action_as_text() {
        assert_eq!(
            parse_line("/me waves  at you"),
            Ok(Line::Say("/me waves  at you".into()))
        );
        assert!(parse_line("/me").unwrap_err().contains("usage: /me"));
        assert!(parse_line("/me   ").unwrap_err().contains("usage: /me"));
    }

    #[test]
    fn every_completed_command_parses() {
        for c in COMMANDS {
            let line = match c.trim_end() {
                "/join" | "/switch" | "/g" => format!("{c}general"),
                "/me" => "/me waves".to_string(),
                "/msg" => "/msg bob hi".to_string(),
                "/query" => "/query bob".to_string(),
                "/search" | "/edit" => format!("{c}words"),
                "/invite" => format!("{c}{}", "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"),
                other => other.to_string(),
            };
            assert!(parse_line(&line).is_ok(), "{line}");
        }
    }
}
