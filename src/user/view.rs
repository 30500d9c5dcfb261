//! What the interactive client knows about its screen, shared by the input thread, the network
//! thread and the line editor: the current and joined groups, unread counts, servers being
//! reconnected, queued messages, and the names Tab completes. The prompt and the status row are
//! pure functions of it, so they are tested here.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::complete::Known;
use super::render::Style;
use super::safe;
use crate::client::GroupRef;
use crate::protocol;

/// The client's view of its groups and connections.
#[derive(Debug, Default)]
pub struct View {
    me: String,
    current: Option<GroupRef>,
    /// Groups joined in this run, in order.
    joined: Vec<GroupRef>,
    unread: HashMap<GroupRef, u32>,
    /// Of the unread, those that mention the user (`@me`).
    mentioned: HashMap<GroupRef, u32>,
    /// Group server addresses that stopped answering and have not come back.
    lost: BTreeSet<String>,
    /// Messages typed but not yet stored, per group server address.
    queued: BTreeMap<String, usize>,
    /// Group names from the last `/list`.
    listed: Vec<String>,
    /// Names from the last `/who` and senders seen, for completion.
    members: BTreeSet<String>,
    /// Lines handed to the network thread that wait for a server, oldest (under way) first.
    busy: VecDeque<String>,
    /// The group the prompt being edited shows: a line that changes the current group may
    /// finish while the prompt (fixed for the line) still shows the old one.
    prompted: Option<GroupRef>,
}

impl View {
    /// The view of user `me`, with no group yet.
    pub fn new(me: &str) -> View {
        View {
            me: me.to_string(),
            ..View::default()
        }
    }

    /// The group plain text goes to.
    pub fn current(&self) -> Option<&GroupRef> {
        self.current.as_ref()
    }

    /// Groups joined in this run, in order.
    pub fn joined(&self) -> &[GroupRef] {
        &self.joined
    }

    /// A joined group by name, `NAME@HOST:PORT`, or for a conversation `@USER`.
    pub fn find_joined(&self, spec: &str) -> Option<GroupRef> {
        self.joined
            .iter()
            .find(|g| g.name == spec || g.to_string() == spec || self.label(g) == spec)
            .cloned()
    }

    /// How a group is shown: its name, or a conversation as `@` and the other user.
    pub fn label(&self, group: &GroupRef) -> String {
        super::output::group_label(&group.name, &self.me)
    }

    /// Joined `group` without making it current (a conversation someone else began).
    pub fn add(&mut self, group: GroupRef) {
        if !self.joined.contains(&group) {
            self.joined.push(group);
        }
    }

    /// Names of the joined groups a group server hosts.
    pub fn groups_at(&self, address: &str) -> Vec<String> {
        self.joined
            .iter()
            .filter(|g| g.address == address)
            .map(|g| g.name.clone())
            .collect()
    }

    /// Joined `group` and made it current.
    pub fn join(&mut self, group: GroupRef) {
        if !self.joined.contains(&group) {
            self.joined.push(group.clone());
        }
        self.switch(group);
    }

    /// Left `group`; if it was current, the last joined one becomes current.
    pub fn leave(&mut self, group: &GroupRef) {
        self.joined.retain(|g| g != group);
        self.unread.remove(group);
        self.mentioned.remove(group);
        if self.current.as_ref() == Some(group) {
            self.current = self.joined.last().cloned();
            if let Some(g) = self.current.clone() {
                self.unread.remove(&g);
            }
        }
    }

    /// `from` lives at `to` now: joined, current, unread and mentions move with it; its old server,
    /// once it holds no joined group, is no longer shown as being reconnected.
    pub fn moved(&mut self, from: &GroupRef, to: &GroupRef) {
        let rename = |g: &mut GroupRef| {
            if g == from {
                *g = to.clone();
            }
        };
        self.joined.iter_mut().for_each(rename);
        self.joined.dedup();
        self.current.iter_mut().for_each(rename);
        self.prompted.iter_mut().for_each(rename);
        for counts in [&mut self.unread, &mut self.mentioned] {
            if let Some(n) = counts.remove(from) {
                counts.insert(to.clone(), n);
            }
        }
        if self.groups_at(&from.address).is_empty() {
            self.lost.remove(&from.address);
        }
    }

    /// Makes `group` current; its unread count starts again from zero.
    pub fn switch(&mut self, group: GroupRef) {
        self.unread.remove(&group);
        self.mentioned.remove(&group);
        self.current = Some(group);
    }

    /// A message arrived: counts as unread unless it is in the current group or one's own.
    pub fn message(&mut self, group: &GroupRef, sender: &str) {
        if sender != self.me {
            self.remember(sender);
            if self.current.as_ref() != Some(group) && self.joined.contains(group) {
                *self.unread.entry(group.clone()).or_default() += 1;
            }
        }
    }

    /// A message that arrived in `group` mentions the user: counted apart while unread.
    pub fn mention(&mut self, group: &GroupRef) {
        if self.current.as_ref() != Some(group) && self.joined.contains(group) {
            *self.mentioned.entry(group.clone()).or_default() += 1;
        }
    }

    /// Unread messages of `group`.
    pub fn unread(&self, group: &GroupRef) -> u32 {
        self.unread.get(group).copied().unwrap_or(0)
    }

    /// Someone joined (`true`) or left a group: a joiner's name is completed from now on (one
    /// who left stays: they may still be named in conversation).
    pub fn presence(&mut self, user: &str, joined: bool) {
        if joined {
            self.remember(user);
        }
    }

    /// A name to complete, unless no server would take it: a name a server sent with
    /// control characters in it must not be typed into the input line by Tab.
    fn remember(&mut self, name: &str) {
        if protocol::check_user_name(name).is_ok() {
            self.members.insert(name.to_string());
        }
    }

    /// The answer of `/who`.
    pub fn set_members(&mut self, names: impl IntoIterator<Item = String>) {
        for name in names {
            if name != self.me {
                self.remember(&name);
            }
        }
    }

    /// The answer of `/list`.
    pub fn set_listed(&mut self, names: impl IntoIterator<Item = String>) {
        self.listed = names
            .into_iter()
            .filter(|n| protocol::check_group_name(n).is_ok())
            .collect();
        self.listed.dedup();
    }

    /// A group server stopped answering (`true`) or answers again (`false`).
    pub fn set_lost(&mut self, address: &str, lost: bool) {
        if lost {
            self.lost.insert(address.to_string());
        } else {
            self.lost.remove(address);
        }
    }

    /// Whether a group server is being reconnected.
    pub fn is_lost(&self, address: &str) -> bool {
        self.lost.contains(address)
    }

    /// How many messages wait for a group server.
    pub fn set_queued(&mut self, address: &str, count: usize) {
        if count == 0 {
            self.queued.remove(address);
        } else {
            self.queued.insert(address.to_string(), count);
        }
    }

    /// A line that waits for a server was handed over; `label` says it in the status row.
    pub fn busy(&mut self, label: String) {
        self.busy.push_back(label);
    }

    /// The oldest line handed over is done.
    pub fn busy_done(&mut self) {
        self.busy.pop_front();
    }

    /// A prompt is about to show the current group.
    pub fn prompted(&mut self) {
        self.prompted = self.current.clone();
    }

    /// The input prompt: `[general]> `, or `> ` with no group. Its width stays fixed while a
    /// line is edited; what changes meanwhile goes in the [`View::status`] row.
    pub fn prompt(&self, style: &Style) -> (String, String) {
        match &self.current {
            Some(g) => (
                format!("[{}]> ", safe::field(&self.label(g))),
                format!("[{}]> ", style.bold(&self.label(g))),
            ),
            None => ("> ".to_string(), "> ".to_string()),
        }
    }

    /// The status row under the input line, empty when there is nothing to say: unread counts
    /// of the other joined groups (`random(3)`), servers being reconnected, queued messages.
    pub fn status(&self) -> String {
        let mut parts = Vec::new();
        if let Some(current) = self
            .current
            .as_ref()
            .filter(|c| self.prompted.as_ref() != Some(*c))
        {
            parts.push(format!("now in {}", safe::field(&self.label(current))));
        }
        if let Some(busy) = self.busy.front() {
            parts.push(busy.clone());
        }
        let unread: Vec<String> = self
            .joined
            .iter()
            .filter(|g| self.unread(g) > 0)
            .map(|g| {
                let label = safe::field(&self.label(g)).into_owned();
                match self.mentioned.get(g) {
                    Some(n) => format!("{label}({},@{n})", self.unread(g)),
                    None => format!("{label}({})", self.unread(g)),
                }
            })
            .collect();
        if !unread.is_empty() {
            parts.push(unread.join(" "));
        }
        for address in &self.lost {
            let names = self.groups_at(address);
            if self.current.as_ref().is_some_and(|c| &c.address == address) || names.is_empty() {
                parts.push(format!("reconnecting… {}", safe::field(address)));
            } else {
                parts.push(format!("{}: reconnecting…", safe::field(&names.join(" "))));
            }
        }
        let queued: usize = self.queued.values().sum();
        if queued > 0 {
            parts.push(format!("{queued} queued"));
        }
        parts.join(" · ")
    }

    /// What Tab can complete.
    pub fn known(&self) -> Known {
        Known {
            joined: self.joined.iter().map(|g| self.label(g)).collect(),
            listed: self.listed.clone(),
            members: self.members.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str, address: &str) -> GroupRef {
        GroupRef {
            name: name.into(),
            address: address.into(),
        }
    }

    #[test]
    fn unread_counts_other_groups_and_resets_on_switch() {
        let (general, random) = (g("general", "h:1"), g("random", "h:1"));
        let mut v = View::new("alice");
        v.join(general.clone());
        v.join(random.clone());
        let plain = Style::new(false, jiff::tz::TimeZone::UTC);
        assert_eq!(v.prompt(&plain).0, "[random]> ");
        v.prompted();
        assert_eq!(v.status(), "");
        for _ in 0..3 {
            v.message(&general, "bob");
        }
        v.message(&random, "bob"); // current: not unread
        v.message(&general, "alice"); // one's own: not unread
        assert_eq!(v.status(), "general(3)");
        v.switch(general.clone());
        assert_eq!(v.prompt(&plain).0, "[general]> ");
        v.prompted();
        assert_eq!(v.status(), "");
        v.message(&random, "carol");
        assert_eq!(v.status(), "random(1)");
        v.leave(&general);
        assert_eq!(v.current(), Some(&random));
        assert_eq!(
            v.status(),
            "now in random",
            "the group made current is read"
        );
        v.prompted();
        assert_eq!(v.status(), "");
        v.leave(&random);
        assert_eq!(v.prompt(&plain).0, "> ");
    }

    #[test]
    fn mentions_count_apart_and_conversations_show_the_other_user() {
        let (general, with_bob) = (g("general", "h:1"), g("@alice@bob", "h:2"));
        let mut v = View::new("alice");
        v.add(with_bob.clone());
        v.join(general.clone());
        v.prompted();
        v.message(&with_bob, "bob");
        v.message(&with_bob, "bob");
        v.switch(with_bob.clone());
        let plain = Style::new(false, jiff::tz::TimeZone::UTC);
        assert_eq!(v.prompt(&plain).0, "[@bob]> ");
        v.prompted();
        for _ in 0..3 {
            v.message(&general, "carol");
        }
        v.mention(&general);
        v.mention(&with_bob); // current: read as it comes
        assert_eq!(v.status(), "general(3,@1)");
        assert_eq!(v.find_joined("@bob"), Some(with_bob));
        v.switch(general);
        v.prompted();
        assert_eq!(v.status(), "");
    }

    #[test]
    fn the_status_shows_lines_under_way_and_a_prompt_left_behind() {
        let mut v = View::new("alice");
        v.prompted();
        v.busy("joining general…".into());
        v.busy("listing groups…".into());
        assert_eq!(v.status(), "joining general…");
        // The join ends while "> " is being edited: the row says where text goes now.
        v.join(g("general", "h:1"));
        v.busy_done();
        assert_eq!(v.status(), "now in general · listing groups…");
        v.busy_done();
        v.prompted();
        assert_eq!(v.status(), "");
    }

    #[test]
    fn the_prompt_is_bold_only_in_colour() {
        let mut v = View::new("alice");
        v.join(g("general", "h:1"));
        let colour = Style::new(true, jiff::tz::TimeZone::UTC);
        let (raw, styled) = v.prompt(&colour);
        assert_eq!(raw, "[general]> ");
        assert_eq!(styled, "[\x1b[1mgeneral\x1b[0m]> ");
    }

    #[test]
    fn the_status_says_reconnecting_and_queued() {
        let mut v = View::new("alice");
        v.join(g("dev", "h:2"));
        v.join(g("general", "h:1"));
        v.prompted();
        v.set_lost("h:1", true);
        assert_eq!(v.status(), "reconnecting… h:1");
        v.set_lost("h:2", true);
        v.set_queued("h:1", 2);
        v.message(&g("dev", "h:2"), "bob");
        assert_eq!(
            v.status(),
            "dev(1) · reconnecting… h:1 · dev: reconnecting… · 2 queued"
        );
        v.set_lost("h:1", false);
        v.set_lost("h:2", false);
        v.set_queued("h:1", 0);
        assert_eq!(v.status(), "dev(1)");
    }

    #[test]
    fn a_moved_group_stays_joined_current_and_unread_at_its_new_server() {
        let (old, new, dev) = (g("general", "h:1"), g("general", "h:9"), g("dev", "h:1"));
        let mut v = View::new("alice");
        v.join(old.clone());
        v.join(dev.clone());
        v.message(&old, "bob");
        v.set_lost("h:1", true);
        v.moved(&old, &new);
        assert_eq!(v.joined(), [new.clone(), dev.clone()]);
        assert_eq!(v.unread(&new), 1);
        assert_eq!(v.find_joined("general"), Some(new.clone()));
        assert!(v.is_lost("h:1"), "dev still lives there");
        v.switch(new.clone());
        v.moved(&dev, &g("dev", "h:9"));
        assert!(!v.is_lost("h:1"), "nothing joined is left there");
        assert_eq!(v.current(), Some(&new));
    }

    #[test]
    fn completion_knows_groups_and_names_but_not_oneself() {
        let mut v = View::new("alice");
        v.join(g("general", "h:1"));
        v.set_listed(["general".to_string(), "random".to_string()]);
        v.set_members(["alice".to_string(), "bob".to_string()]);
        v.message(&g("general", "h:1"), "carol");
        v.presence("dave", true);
        let k = v.known();
        assert_eq!(k.joined, ["general"]);
        assert_eq!(k.listed, ["general", "random"]);
        assert_eq!(k.members, ["bob", "carol", "dave"]);
    }
}
