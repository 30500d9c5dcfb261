//! The operators' commands: groups created, deleted and set private at runtime, bans lifted,
//! history exported and imported.

use std::time::Duration;

use clap::{Subcommand, ValueEnum};

use super::ClientArgs;
use zms::group;
use zms::user::Action;
use zms::Result;

/// The operators' subcommands, flattened into `zms`'s own.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a group at runtime (an operator, as for kick): on the group server named by
    /// --group-server, else the only one the message server lists. With --store, in a
    /// cluster's PostgreSQL database instead, where a group server sharing it hosts the group
    /// within a heartbeat.
    CreateGroup {
        /// The group's name.
        #[arg(value_name = "NAME")]
        group: String,
        /// Only allowed or invited keys may join it (on secure group servers).
        #[arg(long)]
        private: bool,
        /// The group server to host it, HOST:PORT.
        #[arg(long, value_name = "HOST:PORT", conflicts_with = "store")]
        group_server: Option<String>,
        /// The database, as the group servers' --store (nothing goes over the wire).
        #[arg(long, env = "ZMS_STORE", value_name = "postgres://…")]
        store: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a group with all its messages, members and bans (an operator, as for kick).
    DeleteGroup {
        group: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a group private (only allowed or invited keys may join; with --secure) or public
    /// again (an operator, as for kick).
    SetPrivate {
        group: String,
        #[arg(value_enum)]
        state: OnOff,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Let a banned USER join GROUP again (an operator, as for kick).
    Unban {
        group: String,
        user: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print every stored message of GROUP as JSON Lines, the objects `history --json`
    /// prints (an operator, or a member), for `zms import` elsewhere.
    Export {
        group: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Store the messages of an export (JSON Lines on stdin) in GROUP, keeping their seqs and
    /// times; they must follow its last message (an operator, as for kick).
    Import {
        group: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// On or off.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl AdminCommand {
    /// Runs the command.
    ///
    /// # Errors
    /// Whatever stopped it, as one line for the user.
    pub fn run(self, ctx: &zmq::Context) -> Result<()> {
        match self {
            AdminCommand::CreateGroup {
                group,
                private,
                store: Some(store),
                ..
            } => create_in_database(&group, private, &store),
            AdminCommand::CreateGroup {
                group,
                private,
                group_server,
                client,
                ..
            } => client.run(ctx, Action::CreateGroup(group, private, group_server)),
            AdminCommand::DeleteGroup { group, client } => {
                client.run(ctx, Action::DeleteGroup(group))
            }
            AdminCommand::SetPrivate {
                group,
                state,
                client,
            } => client.run(ctx, Action::SetPrivate(group, matches!(state, OnOff::On))),
            AdminCommand::Unban {
                group,
                user,
                client,
            } => client.run(ctx, Action::Unban(group, user)),
            AdminCommand::Export { group, client } => client.run(ctx, Action::Export(group)),
            AdminCommand::Import { group, client } => client.run(ctx, Action::Import(group)),
        }
    }
}

/// `zms create-group --store`: the group is made in the database, where the cluster's group
/// servers find it.
fn create_in_database(name: &str, private: bool, url: &str) -> Result<()> {
    zms::protocol::check_group_name(name).map_err(zms::Error::Input)?;
    let mut store = group::postgres::PgStore::connect(url, "create-group", Duration::from_secs(1))?;
    if store.create_group(name, private, zms::time::now_ms())? {
        println!("created group {name}");
    } else {
        println!("group {name} exists already");
    }
    Ok(())
}
