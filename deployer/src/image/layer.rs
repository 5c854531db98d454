//! Deterministic image layers: entries sorted by path, fixed times and owners, gzip
//! with no timestamp or name, so the same files give the same digest on any machine.

use std::collections::BTreeMap;

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

/// Every entry's modification time: the epoch, for reproducibility.
const MTIME: u64 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32, owner: u64 },
    File { mode: u32, data: Vec<u8> },
}

/// Files of a layer, by absolute path inside the image.
#[derive(Debug, Clone, Default)]
pub struct Files(BTreeMap<String, Entry>);

impl Files {
    /// Adds a file and the directories above it (0755, root's).
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.parents(path);
        self.0.insert(clean(path), Entry::File { mode, data });
    }

    pub fn dir(&mut self, path: &str, mode: u32, owner: u64) {
        self.parents(path);
        self.0.insert(clean(path), Entry::Dir { mode, owner });
    }

    fn parents(&mut self, path: &str) {
        let mut parent = std::path::Path::new(path).parent();
        while let Some(p) = parent.filter(|p| p.as_os_str() != "/" && !p.as_os_str().is_empty()) {
            self.0
                .entry(clean(&p.to_string_lossy()))
                .or_insert(Entry::Dir {
                    mode: 0o755,
                    owner: 0,
                });
            parent = p.parent();
        }
    }
}

/// `/usr/bin/x` -> `usr/bin/x`, as tar entries name them.
fn clean(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

/// A built layer: the compressed blob, its digest, and the digest of the tar inside
/// (the image config's `diff_id`).
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
    /// As the manifest names it: ours are OCI gzip layers; a pinned base keeps its own.
    pub media_type: String,
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

pub fn build(files: &Files) -> std::io::Result<Layer> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, entry) in &files.0 {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(MTIME);
        header.set_username("")?;
        header.set_groupname("")?;
        match entry {
            Entry::Dir { mode, owner } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_uid(*owner);
                header.set_gid(*owner);
                header.set_size(0);
                tar.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            Entry::File { mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_uid(0);
                header.set_gid(0);
                header.set_size(data.len() as u64);
                tar.append_data(&mut header, path, data.as_slice())?;
            }
        }
    }
    let tar = tar.into_inner()?;
    let diff_id = sha256(&tar);
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    std::io::Write::write_all(&mut gz, &tar)?;
    let blob = gz.finish()?;
    Ok(Layer {
        digest: sha256(&blob),
        diff_id,
        blob,
        media_type: super::LAYER_TYPE.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_files_in_any_order_give_the_same_digest() {
        let mut a = Files::default();
        a.file("/usr/local/bin/x", 0o755, b"binary".to_vec());
        a.file("/app/assets/t.html", 0o644, b"<p>".to_vec());
        let mut b = Files::default();
        b.file("/app/assets/t.html", 0o644, b"<p>".to_vec());
        b.file("/usr/local/bin/x", 0o755, b"binary".to_vec());
        let (la, lb) = (build(&a).unwrap(), build(&b).unwrap());
        assert_eq!(la.digest, lb.digest);
        assert_eq!(la.diff_id, lb.diff_id);
        a.file("/usr/local/bin/x", 0o755, b"binary2".to_vec());
        assert_ne!(build(&a).unwrap().digest, lb.digest);
    }

    #[test]
    fn parents_are_created_as_directories() {
        let mut f = Files::default();
        f.file("/a/b/c", 0o644, Vec::new());
        let names: Vec<&String> = f.0.keys().collect();
        assert_eq!(names, ["a", "a/b", "a/b/c"]);
    }
}
