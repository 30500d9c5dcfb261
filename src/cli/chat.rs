//! The chat commands of the command line: `zms search`, `zms unread`, `zms edit`,
//! `zms delete`, flattened into [`crate::cli::Command`].

use clap::Subcommand;

use super::ClientArgs;
use zms::user::chat::ChatAction;
use zms::user::Action;
use zms::{errinput, Result};

/// Search, unread counts, edits and deletions.
#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Search the messages of GROUP, or of every group you are a member of: [GROUP] QUERY.
    /// Every word of QUERY must be in a message; newest matches, shown oldest first.
    Search {
        /// [GROUP] QUERY
        #[arg(num_args = 1..=2, required = true, value_names = ["GROUP", "QUERY"])]
        words: Vec<String>,
        /// Only messages at or after TIME (as for history).
        #[arg(long)]
        since: Option<String>,
        /// At most N matches (default 20, at most 100).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// How many messages are new in each of your groups since you last read them.
    Unread {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace the text of your message SEQ in GROUP; everyone sees it as edited.
    Edit {
        group: String,
        seq: u64,
        text: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete your message SEQ in GROUP; everyone sees it as deleted.
    Delete {
        group: String,
        seq: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl ChatCommand {
    /// The one-shot action and the client flags to run it with.
    pub fn into_action(self) -> Result<(ClientArgs, Action)> {
        let (client, action) = match self {
            ChatCommand::Search {
                mut words,
                since,
                limit,
                client,
            } => {
                let query = words.pop().ok_or_else(|| errinput!("search for what?"))?;
                let group = words.pop();
                let action = ChatAction::Search {
                    group,
                    query,
                    since,
                    limit,
                };
                (client, action)
            }
            ChatCommand::Unread { client } => (client, ChatAction::Unread),
            ChatCommand::Edit {
                group,
                seq,
                text,
                client,
            } => (client, ChatAction::Edit { group, seq, text }),
            ChatCommand::Delete { group, seq, client } => {
                (client, ChatAction::Delete { group, seq })
            }
        };
        Ok((client, Action::Chat(action)))
    }
}
