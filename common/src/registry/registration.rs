//! nerve's side: one ephemeral node per service instance, never two: sequential (default)
//! or plain, its name fixed or carrying the payload (airbnb path encoding), open to anyone or
//! protected by ACLs (creator-all + world-read) when the session authenticates.

use std::sync::Arc;

use tracing::warn;

use super::session::Session;
use super::{zk, zk_err, RegistryError};

/// What [`Registration::ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// The node was there with the right data.
    Unchanged,
    /// The node's data was rewritten.
    Updated,
    /// A node was created (first time, or after a session expiry).
    Created,
}

/// How the node is created and named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOptions {
    /// Ephemeral-sequential (`<name>_<seq>`, the default) or plain ephemeral (`<name>`).
    pub sequential: bool,
    /// airbnb path encoding: the name is `base64_<len>_<base64 of the payload>` (then `_<seq>`
    /// when sequential) instead of `<name>`, so a payload change means a new node (created
    /// before the old one is deleted). Our nodes are then recognised by the payload's `name`,
    /// which must be this instance's own (`owner_name`).
    pub path_encoding: Option<String>,
    /// Create the node (and any missing parent) with ACLs creator-all + world-read instead of
    /// world-all: set when the session authenticates, so another session cannot delete or
    /// rewrite them.
    pub protected: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            sequential: true,
            path_encoding: None,
            protected: false,
        }
    }
}

/// creator-all + world-read.
static PROTECTED: [zk::Acl; 2] = [
    zk::Acl::new_const(zk::Permission::ALL, "auth", ""),
    zk::Acl::new_const(zk::Permission::READ, "world", "anyone"),
];

/// Keeps one ephemeral node for one service instance (see [`NodeOptions`]).
///
/// Used by a single reconciler task; it remembers the node it owns and the session it was
/// created under.
#[derive(Debug)]
pub struct Registration {
    session: Arc<Session>,
    naming: Naming,
    owned: Option<Owned>,
    /// Nodes of ours may exist that we do not hold: a node of an earlier session the ensemble
    /// may still keep, or a create whose reply was lost. The next [`Registration::remove`]
    /// scans the parent for them (`ensure` always does before creating).
    unsure: bool,
}

#[derive(Debug)]
struct Owned {
    session_epoch: u64,
    path: String,
    data: Vec<u8>,
}

/// Our nodes found under the parent.
#[derive(Debug, Default)]
struct Ours {
    /// Owned by the current session, highest sequence number last.
    current: Vec<String>,
    /// Owned by an earlier session of this process.
    earlier: Vec<String>,
}

impl Registration {
    /// A registration of children named `<name>_<seq>` under `parent` (created if missing).
    pub fn new(session: Arc<Session>, parent: &str, name: &str) -> Self {
        Self::with_options(session, parent, name, NodeOptions::default())
    }

    /// A registration of children `<name>[_<seq>]` (or path-encoded) under `parent`.
    pub fn with_options(session: Arc<Session>, parent: &str, name: &str, options: NodeOptions) -> Self {
        Registration {
            session,
            naming: Naming {
                parent: parent.to_string(),
                base: format!("{}/{}", parent.trim_end_matches('/'), name),
                options,
            },
            owned: None,
            unsure: false,
        }
    }
}

/// Names and ACLs of a registration's nodes.
#[derive(Debug)]
struct Naming {
    parent: String,
    /// `<parent>/<name>`.
    base: String,
    options: NodeOptions,
}

impl Naming {
    /// The path to create for `data`: the full name, or the prefix ZooKeeper appends the
    /// sequence number to.
    fn create_path(&self, data: &[u8]) -> String {
        let name = match &self.options.path_encoding {
            Some(_) => {
                let encoded = crate::codec::encode_path_name_bytes(data);
                format!(
                    "{}/{}",
                    self.parent.trim_end_matches('/'),
                    encoded.trim_end_matches('_')
                )
            }
            None => self.base.clone(),
        };
        if self.options.sequential {
            name + "_"
        } else {
            name
        }
    }

    /// Whether child `child` (a name) is a node of this registration, by name alone (its
    /// owner is checked apart).
    fn is_ours(&self, child: &str) -> bool {
        match &self.options.path_encoding {
            Some(owner) => {
                let seq_ok = if self.options.sequential {
                    child.rsplit_once('_').is_some_and(|(_, seq)| is_seq(seq))
                } else {
                    true
                };
                seq_ok
                    && child.starts_with("base64_")
                    && crate::codec::decode(child, b"")
                        .is_ok_and(|n| n.name.as_deref() == Some(owner.as_str()))
            }
            None => {
                let name = self.base.rsplit('/').next().unwrap_or_default();
                if self.options.sequential {
                    child
                        .strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix('_'))
                        .is_some_and(is_seq)
                } else {
                    child == name
                }
            }
        }
    }

    /// Whether a node at `path` (ours) matches what `create_path(data)` would create.
    fn matches(&self, path: &str, data: &[u8]) -> bool {
        let want = self.create_path(data);
        if self.options.sequential {
            path.strip_prefix(want.as_str()).is_some_and(is_seq)
        } else {
            path == want
        }
    }

    fn acls(&self) -> zk::Acls<'static> {
        if self.options.protected {
            zk::Acls::new(&PROTECTED)
        } else {
            zk::Acls::anyone_all()
        }
    }
}

impl Registration {
    /// Takes over a node of ours that another `Registration` (of this process, same session)
    /// left in place: the first `ensure` adopts it, or the first `remove` deletes it.
    pub fn take_over(&mut self) {
        self.unsure = true;
    }

    /// The full path of the node currently held, if any.
    pub fn path(&self) -> Option<&str> {
        self.owned.as_ref().map(|o| o.path.as_str())
    }

    /// Makes ZooKeeper hold exactly one node of ours with `data`.
    ///
    /// After a session change the node of the earlier session is either gone or about to go
    /// (the ensemble may hold a session for up to its timeout after the client gave it up), so
    /// a new one is created. Before creating, the parent is scanned: nodes of this process's
    /// earlier sessions are deleted, so there is never more than one node for the instance,
    /// and a node this session already owns (a create whose reply was lost to a disconnection
    /// did happen) is adopted, any extra one deleted.
    pub async fn ensure(&mut self, data: &[u8]) -> Result<EnsureOutcome, RegistryError> {
        let (client, status, session_id) = self.session.client()?;
        if self
            .owned
            .as_ref()
            .is_some_and(|o| o.session_epoch != status.session_epoch)
        {
            self.owned = None;
        }
        if let Some((path, same)) = self.owned.as_ref().map(|o| (o.path.clone(), o.data == data)) {
            match client.check_stat(&path).await.map_err(zk_err("exists", &path))? {
                Some(_) if same => return Ok(EnsureOutcome::Unchanged),
                // The name carries the payload: a new node, then the old one goes (below).
                Some(_) if !self.naming.matches(&path, data) => {}
                Some(_) => match client.set_data(&path, data, None).await {
                    Ok(_) => {
                        self.owned = Some(Owned {
                            session_epoch: status.session_epoch,
                            path,
                            data: data.to_vec(),
                        });
                        return Ok(EnsureOutcome::Updated);
                    }
                    Err(zk::Error::NoNode) => {
                        warn!(zk.path = %path, "our node vanished from ZooKeeper; registering again")
                    }
                    Err(e) => return Err(zk_err("set", &path)(e)),
                },
                None => warn!(zk.path = %path, "our node vanished from ZooKeeper; registering again"),
            }
        }
        self.owned = None;
        // Whatever fails from here on may leave a node of ours behind.
        self.unsure = true;
        let mut ours = self
            .ours(&client, session_id, &status.earlier_session_ids)
            .await?;
        for stale in &ours.earlier {
            warn!(zk.path = %stale, "deleting the node of an earlier session of ours (the ensemble still holds that session)");
            delete_if_exists(&client, stale).await?;
        }
        // Adopt a node of this session with the right name (a create whose reply was lost, or
        // the one we hold); the others go once the node we keep is in place.
        let keep = ours.current.iter().rposition(|p| self.naming.matches(p, data));
        let (path, outcome) = match keep {
            Some(i) => {
                let path = ours.current.remove(i);
                // Adopted as it is when it already says the right thing (a node handed over
                // by a reload or by the previous process): readers see no change at all.
                let same = match client.get_data(&path).await {
                    Ok((current, _)) => current == data,
                    Err(zk::Error::NoNode) => false,
                    Err(e) => return Err(zk_err("get", &path)(e)),
                };
                if same {
                    (path, EnsureOutcome::Unchanged)
                } else {
                    client
                        .set_data(&path, data, None)
                        .await
                        .map_err(zk_err("set", &path))?;
                    (path, EnsureOutcome::Updated)
                }
            }
            None => {
                let persistent = zk::CreateMode::Persistent.with_acls(self.naming.acls());
                client
                    .mkdir(&self.naming.parent, &persistent)
                    .await
                    .map_err(zk_err("mkdir", &self.naming.parent))?;
                let target = self.naming.create_path(data);
                let mode = if self.naming.options.sequential {
                    zk::CreateMode::EphemeralSequential
                } else {
                    zk::CreateMode::Ephemeral
                };
                let (_, seq) = client
                    .create(&target, data, &mode.with_acls(self.naming.acls()))
                    .await
                    .map_err(|e| match e {
                        // Not one of ours (we deleted those): another process's, or one of a
                        // previous run of nerve whose session the ensemble still holds; it
                        // goes when that session expires. Retried with backoff.
                        zk::Error::NodeExists => RegistryError::Taken { path: target.clone() },
                        e => zk_err("create", &target)(e),
                    })?;
                let path = if self.naming.options.sequential {
                    format!("{target}{seq}")
                } else {
                    target
                };
                (path, EnsureOutcome::Created)
            }
        };
        self.owned = Some(Owned {
            session_epoch: status.session_epoch,
            path,
            data: data.to_vec(),
        });
        for extra in &ours.current {
            warn!(zk.path = %extra, "deleting a former or duplicate node of ours");
            delete_if_exists(&client, extra).await?;
        }
        self.unsure = false;
        Ok(outcome)
    }

    /// Deletes our node if we hold one, and any other node of ours that may be left (of an
    /// earlier session the ensemble still holds, or of a create whose reply was lost). True if
    /// a node was deleted.
    pub async fn remove(&mut self) -> Result<bool, RegistryError> {
        if self.owned.is_none() && !self.unsure {
            return Ok(false);
        }
        let (client, status, session_id) = self.session.client()?;
        if self
            .owned
            .as_ref()
            .is_some_and(|o| o.session_epoch != status.session_epoch)
        {
            // Gone with its session, or about to be (the ensemble may still hold it): make sure.
            self.owned = None;
            self.unsure = true;
        }
        let mut existed = false;
        if let Some(path) = self.owned.as_ref().map(|o| o.path.clone()) {
            existed = delete_if_exists(&client, &path).await?;
            self.owned = None;
        }
        if self.unsure {
            let ours = self
                .ours(&client, session_id, &status.earlier_session_ids)
                .await?;
            for path in ours.earlier.iter().chain(&ours.current) {
                warn!(zk.path = %path, "deleting a node of ours left from an earlier session or a lost reply");
                existed |= delete_if_exists(&client, path).await?;
            }
            self.unsure = false;
        }
        Ok(existed)
    }

    /// Our nodes under the parent: those owned by `session_id` and those owned by one of
    /// `earlier` sessions of this process.
    async fn ours(
        &self,
        client: &zk::Client,
        session_id: i64,
        earlier: &[i64],
    ) -> Result<Ours, RegistryError> {
        let children = match client.list_children(&self.naming.parent).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => return Ok(Ours::default()),
            Err(e) => return Err(zk_err("list", &self.naming.parent)(e)),
        };
        let mut ours = Ours::default();
        for child in children.iter().filter(|c| self.naming.is_ours(c)) {
            let path = format!("{}/{}", self.naming.parent.trim_end_matches('/'), child);
            let Some(stat) = client.check_stat(&path).await.map_err(zk_err("exists", &path))? else {
                continue;
            };
            if stat.ephemeral_owner == session_id {
                ours.current.push(path);
            } else if earlier.contains(&stat.ephemeral_owner) {
                ours.earlier.push(path);
            }
        }
        ours.current.sort();
        Ok(ours)
    }
}

/// Deletes `path` if it is an ephemeral node of `session`'s current session: a node a
/// predecessor handed over (with the session) that no service of ours claims any more. True
/// if it was deleted.
pub async fn delete_own_node(session: &Session, path: &str) -> Result<bool, RegistryError> {
    let (client, _, session_id) = session.client()?;
    match client.check_stat(path).await.map_err(zk_err("exists", path))? {
        Some(stat) if stat.ephemeral_owner == session_id => delete_if_exists(&client, path).await,
        _ => Ok(false),
    }
}

fn is_seq(seq: &str) -> bool {
    !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit())
}

async fn delete_if_exists(client: &zk::Client, path: &str) -> Result<bool, RegistryError> {
    match client.delete(path, None).await {
        Ok(()) => Ok(true),
        Err(zk::Error::NoNode) => Ok(false),
        Err(e) => Err(zk_err("delete", path)(e)),
    }
}

#[cfg(test)]
mod tests;
