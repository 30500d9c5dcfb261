//! Administration from the client: the requests only an operator may make (a key the group
//! server names with `--operator`, or without security a client on the group server's host).

use super::session::{expect_ok, GroupRef, Session};
use super::unexpected;
use crate::protocol::{self, Acked, Imported, Reply, Request};
use crate::{errinput, transport, Error, Result};

impl Session {
    /// Sends an administration request that is answered OK (CREATE, DROP, SET, UNBAN) to the
    /// group server of `group`.
    ///
    /// # Errors
    /// UNAUTHORIZED for a client that is not an operator, the server's other refusals, or its
    /// silence.
    pub fn administer(&mut self, group: &GroupRef, request: &Request) -> Result<()> {
        let reply = self.group_request(group, request)?;
        expect_ok(reply, "OK")
    }

    /// The group server a new group goes to: `address` if given, else the only one the
    /// message server lists.
    ///
    /// # Errors
    /// No message server answering, or none or several group servers to choose from.
    pub fn group_server(&mut self, address: Option<&str>) -> Result<String> {
        // The list also tells a secure client each group server's key.
        let groups = self.list_groups()?;
        if let Some(address) = address {
            return Ok(transport::address(&transport::endpoint(address)?));
        }
        let mut servers: Vec<&str> = groups.iter().map(|g| g.address.as_str()).collect();
        servers.sort_unstable();
        servers.dedup();
        match servers.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(Error::NotFound(
                "the message server lists no group server; name one with --group-server HOST:PORT"
                    .into(),
            )),
            many => Err(errinput!(
                "the message server lists several group servers ({}); name one with --group-server",
                many.join(", ")
            )),
        }
    }

    /// Stores `messages` in `group` as they were stored elsewhere (IMPORT): their seqs must
    /// follow the group's last seq. Returns each one's ack.
    ///
    /// # Errors
    /// BAD_REQUEST naming what does not follow, UNAUTHORIZED for a client that is not an
    /// operator, or the server's silence.
    pub fn import(&mut self, group: &GroupRef, messages: Vec<Imported>) -> Result<Vec<Acked>> {
        if messages.is_empty() || messages.len() > protocol::MAX_BATCH {
            return Err(errinput!(
                "an import carries 1 to {} messages",
                protocol::MAX_BATCH
            ));
        }
        let request = Request::Import {
            group: group.name.clone(),
            messages,
        };
        match self.group_request(group, &request)? {
            Reply::Acks(acks) => Ok(acks),
            other => Err(unexpected(other, "ACKS")),
        }
    }
}
