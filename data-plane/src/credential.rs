//! The node's own credential, from enrollment (`Fleet.Enroll`): kept in memory and, with
//! `--state-dir`, in the file `credential` (owner-only, replaced atomically) as the node
//! id and the credential on two lines, so a restarted node connects with it without
//! spending a bootstrap token. A file for another node id is ignored.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

const FILE: &str = "credential";

#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}")]
pub struct CredentialError {
    pub path: PathBuf,
    pub error: io::Error,
}

/// The credential of one node id.
#[derive(Debug)]
pub struct Credential {
    node_id: String,
    dir: Option<PathBuf>,
    current: Mutex<Option<String>>,
}

impl Credential {
    /// The credential kept in `dir` for `node_id`, if any (`dir` `None`: memory only).
    pub fn load(node_id: &str, dir: Option<PathBuf>) -> Result<Credential, CredentialError> {
        let mut current = None;
        if let Some(d) = &dir {
            let path = d.join(FILE);
            match fs::read_to_string(&path) {
                Ok(text) => {
                    let mut lines = text.lines();
                    match (lines.next(), lines.next()) {
                        (Some(id), Some(token)) if id == node_id && !token.is_empty() => {
                            current = Some(token.to_string());
                        }
                        _ => {
                            tracing::warn!(path = %path.display(), "the kept credential is for another node id or damaged; enrolling again")
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(CredentialError { path, error }),
            }
        }
        Ok(Credential {
            node_id: node_id.to_string(),
            dir,
            current: Mutex::new(current),
        })
    }

    /// The credential to present, if the node has one.
    pub fn get(&self) -> Option<String> {
        self.current.lock().expect("credential lock").clone()
    }

    /// Keeps a new credential (in memory, and in `--state-dir`).
    pub fn set(&self, credential: String) -> Result<(), CredentialError> {
        if let Some(dir) = &self.dir {
            let text = format!("{}\n{credential}\n", self.node_id);
            crate::cache::write_private(dir, FILE, &[text.as_bytes()])
                .map_err(|(path, error)| CredentialError { path, error })?;
        }
        *self.current.lock().expect("credential lock") = Some(credential);
        Ok(())
    }

    /// Forgets a credential the control plane no longer accepts (the next session
    /// enrolls again).
    pub fn forget(&self) {
        *self.current.lock().expect("credential lock") = None;
        if let Some(dir) = &self.dir {
            let _ = fs::remove_file(dir.join(FILE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_credential_is_read_back_for_its_node_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let c = Credential::load("edge-1", Some(state.clone())).unwrap();
        assert_eq!(c.get(), None);
        c.set("s3cret".into()).unwrap();
        assert_eq!(
            Credential::load("edge-1", Some(state.clone()))
                .unwrap()
                .get(),
            Some("s3cret".into())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(state.join(FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            Credential::load("edge-2", Some(state.clone()))
                .unwrap()
                .get(),
            None
        );
        c.forget();
        assert_eq!(Credential::load("edge-1", Some(state)).unwrap().get(), None);
    }
}
