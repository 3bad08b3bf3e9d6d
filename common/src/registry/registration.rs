//! nerve's side: one ephemeral-sequential node per service instance, never two.

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

/// Keeps one ephemeral-sequential node `<parent>/<name>_<seq>` for one service instance.
///
/// Used by a single reconciler task; it remembers the node it owns and the session it was
/// created under.
#[derive(Debug)]
pub struct Registration {
    session: Arc<Session>,
    parent: String,
    prefix: String,
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
        let prefix = format!("{}/{}_", parent.trim_end_matches('/'), name);
        Registration {
            session,
            parent: parent.to_string(),
            prefix,
            owned: None,
            unsure: false,
        }
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
                Some(_) => match client.set_data(&path, data, None).await {
                    Ok(_) => {
                        self.owned = Some(Owned {
                            session_epoch: status.session_epoch,
                            path,
                            data: data.to_vec(),
                        });
                        return Ok(EnsureOutcome::Updated);
                    }
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(zk_err("set", &path)(e)),
                },
                None => {}
            }
            warn!(zk.path = %path, "our node vanished from ZooKeeper; registering again");
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
        if let Some(path) = ours.current.pop() {
            for extra in &ours.current {
                warn!(zk.path = %extra, "deleting duplicate node of ours");
                delete_if_exists(&client, extra).await?;
            }
            client
                .set_data(&path, data, None)
                .await
                .map_err(zk_err("set", &path))?;
            self.owned = Some(Owned {
                session_epoch: status.session_epoch,
                path,
                data: data.to_vec(),
            });
            self.unsure = false;
            return Ok(EnsureOutcome::Updated);
        }
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        client
            .mkdir(&self.parent, &persistent)
            .await
            .map_err(zk_err("mkdir", &self.parent))?;
        let ephemeral = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let (_, seq) = client
            .create(&self.prefix, data, &ephemeral)
            .await
            .map_err(zk_err("create", &self.prefix))?;
        let path = format!("{}{}", self.prefix, seq);
        self.owned = Some(Owned {
            session_epoch: status.session_epoch,
            path,
            data: data.to_vec(),
        });
        self.unsure = false;
        Ok(EnsureOutcome::Created)
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
        let children = match client.list_children(&self.parent).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => return Ok(Ours::default()),
            Err(e) => return Err(zk_err("list", &self.parent)(e)),
        };
        let name_prefix = self.prefix.rsplit('/').next().unwrap_or_default();
        let mut ours = Ours::default();
        for child in children.iter().filter(|c| is_seq_child(c, name_prefix)) {
            let path = format!("{}/{}", self.parent.trim_end_matches('/'), child);
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

fn is_seq_child(child: &str, name_prefix: &str) -> bool {
    child
        .strip_prefix(name_prefix)
        .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
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
