//! A data directory's node id: random, made at its first start, kept in `node.id`.
//!
//! A broker whose disk is wiped comes back with a new id. Raft's safety rests on a node never
//! forgetting its vote; a new id makes the wiped broker a new node that the leader adds
//! again, instead of an old voter with amnesia.

use std::io::{self, Write};
use std::path::Path;

use crate::NodeId;

const FILE: &str = "node.id";

/// Reads `dir/node.id`, or creates it (fsynced, with its directory) with a random non-zero id.
pub fn load_or_create(dir: &Path) -> io::Result<NodeId> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<NodeId>().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a node id: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = loop {
                let id: NodeId = rand::random();
                if id != 0 {
                    break id;
                }
            };
            let tmp = dir.join(format!("{FILE}.tmp"));
            let mut file = std::fs::File::create(&tmp)?;
            writeln!(file, "{id}")?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create(dir.path()).unwrap();
        assert_ne!(id, 0);
        assert_eq!(load_or_create(dir.path()).unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), id);
    }

    #[test]
    fn a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "not a number").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
