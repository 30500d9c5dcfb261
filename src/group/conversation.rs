//! Conversations (direct messages) come to exist on the group server: the JOIN of either of
//! a conversation's two users creates it where the message server placed it (PROTOCOL.md,
//! "Direct messages"). State then treats it as any group.

use tracing::{info, warn};

use super::batch::Batch;
use super::GroupServer;
use crate::protocol::{self, ErrorCode, Request};

impl GroupServer {
    /// Makes way for a JOIN of a conversation this server does not host yet by one of its two
    /// users: creates it, with the other user a member from the start (so either finds it in
    /// the directory and may read it at once). The JOIN itself is then decided by State as any
    /// other. In cluster mode the group is created in the shared database and hosted here only
    /// if the pool's balance gives it to this server; otherwise the user asks again.
    pub(super) fn open_conversation(
        &mut self,
        request: &Request,
        batch: &mut Batch,
    ) -> Result<(), (ErrorCode, String)> {
        let Request::Join { group, user } = request else {
            return Ok(());
        };
        let Some((low, high)) = protocol::conversation_users(group) else {
            return Ok(());
        };
        if self.state.group_id(group).is_some() || (user != low && user != high) {
            return Ok(());
        }
        if self.state.group_names().len() >= protocol::MAX_GROUPS_PER_SERVER {
            let reason = format!(
                "this server hosts its maximum of {} groups and conversations",
                protocol::MAX_GROUPS_PER_SERVER
            );
            return Err((ErrorCode::Limited, reason));
        }
        let other = if user == low { high } else { low };
        // Created outside any transaction, so that a batch failing later cannot take it back
        // from under the memory that hosts it.
        batch.settle(&mut self.state, self.store.as_mut());
        let now_ms = crate::time::now_ms();
        let created = self.store.ensure_group(group, now_ms).and_then(|stored| {
            self.store.add_member(stored.id, other, now_ms)?;
            self.store.load_group(stored.id)
        });
        let stored = created.map_err(|err| {
            warn!(%err, %group, "cannot create a conversation");
            let reason = format!("cannot create the conversation: {err}");
            (ErrorCode::Unavailable, reason)
        })?;
        info!(%group, "conversation created");
        if !self.cluster {
            self.state.host(stored, false);
            return Ok(());
        }
        self.rebalance();
        match self.state.group_id(group) {
            Some(_) => Ok(()),
            None => Err((
                ErrorCode::Unavailable,
                format!("'{group}' is created; another group server of the pool hosts it, ask the message server again"),
            )),
        }
    }
}
