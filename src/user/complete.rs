//! What Tab completes, as a pure function of the text before the cursor: command names, group
//! names (joined ones for /switch, /leave and /who; those of the last /list for /join) and
//! member names (from the last /who and senders seen), irssi-style with `: ` after a name that
//! starts a message.

use super::command::COMMANDS;

/// The names completion draws on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Joined group names.
    pub joined: Vec<String>,
    /// Group names from the last `/list`.
    pub listed: Vec<String>,
    /// Member names (not one's own).
    pub members: Vec<String>,
}

/// Completions of the word that ends at the end of `head` (the line up to the cursor): where
/// that word starts, and what may replace it, sorted.
pub fn candidates(head: &str, known: &Known) -> (usize, Vec<String>) {
    let start = head.rfind(char::is_whitespace).map_or(0, |i| {
        i + head[i..].chars().next().map_or(1, char::len_utf8)
    });
    let word = &head[start..];
    let before: Vec<&str> = head[..start].split_whitespace().collect();
    let prefixed = |names: &[String], suffix: &str| -> Vec<String> {
        let mut out: Vec<String> = names
            .iter()
            .filter(|n| n.starts_with(word))
            .map(|n| format!("{n}{suffix}"))
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let found = match before.as_slice() {
        [] if word.starts_with('/') && !word.starts_with("//") => COMMANDS
            .iter()
            .filter(|c| c.starts_with(word))
            .map(|c| c.to_string())
            .collect(),
        ["/join" | "/j"] => {
            let mut groups = known.listed.clone();
            groups.retain(|g| !known.joined.contains(g));
            prefixed(&groups, " ")
        }
        ["/switch" | "/g" | "/leave" | "/part" | "/who" | "/members"] => {
            prefixed(&known.joined, " ")
        }
        ["/history"] => prefixed(&["since".to_string()], " "),
        _ if word.is_empty() || head.starts_with("//") && before.is_empty() => Vec::new(),
        // A name that starts a message addresses someone: "bob: ".
        [] => member_names(word, known, ": "),
        [first, ..] if first.starts_with('/') && *first != "/me" && *first != "/send" => Vec::new(),
        _ => member_names(word, known, " "),
    };
    (start, found)
}

/// Member names starting with `word`, ignoring case, each followed by `suffix`.
fn member_names(word: &str, known: &Known, suffix: &str) -> Vec<String> {
    let lower = word.to_lowercase();
    let mut out: Vec<String> = known
        .members
        .iter()
        .filter(|n| n.to_lowercase().starts_with(&lower))
        .map(|n| format!("{n}{suffix}"))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known {
        Known {
            joined: vec!["general".into(), "random".into()],
            listed: vec!["general".into(), "random".into(), "rust".into()],
            members: vec!["bob".into(), "Bea".into(), "carol".into()],
        }
    }

    fn complete(head: &str) -> (usize, Vec<String>) {
        candidates(head, &known())
    }

    #[test]
    fn commands_complete_at_the_start() {
        assert_eq!(complete("/jo"), (0, vec!["/join ".to_string()]));
        assert_eq!(
            complete("/h"),
            (0, vec!["/help".to_string(), "/history ".to_string()])
        );
        assert_eq!(complete("/").1.len(), COMMANDS.len());
        assert_eq!(complete("/zz").1, Vec::<String>::new());
        assert_eq!(complete("//jo").1, Vec::<String>::new());
    }

    #[test]
    fn join_offers_listed_groups_not_yet_joined() {
        assert_eq!(complete("/join r"), (6, vec!["rust ".to_string()]));
        assert_eq!(complete("/join ").1, vec!["rust ".to_string()]);
    }

    #[test]
    fn switch_leave_and_who_offer_joined_groups() {
        assert_eq!(complete("/switch r"), (8, vec!["random ".to_string()]));
        assert_eq!(complete("/g ge"), (3, vec!["general ".to_string()]));
        assert_eq!(
            complete("/leave ").1,
            vec!["general ".to_string(), "random ".to_string()]
        );
        assert_eq!(complete("/who ra").1, vec!["random ".to_string()]);
        assert_eq!(complete("/history s").1, vec!["since ".to_string()]);
    }

    #[test]
    fn names_complete_in_text_ignoring_case() {
        assert_eq!(
            complete("b"),
            (0, vec!["Bea: ".to_string(), "bob: ".to_string()])
        );
        assert_eq!(complete("bo"), (0, vec!["bob: ".to_string()]));
        assert_eq!(complete("thanks ca"), (7, vec!["carol ".to_string()]));
        assert_eq!(
            complete("/me waves at B"),
            (13, vec!["Bea ".to_string(), "bob ".to_string()])
        );
        assert_eq!(complete("héllo bo"), (7, vec!["bob ".to_string()]));
        // Nothing typed, or inside a command that takes no names: nothing offered.
        assert_eq!(complete("hello ").1, Vec::<String>::new());
        assert_eq!(complete("/list b").1, Vec::<String>::new());
    }
}
