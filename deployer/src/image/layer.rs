//! Deterministic image layers: entries sorted by path, fixed times and owners, gzip
//! with no timestamp or name, so the same files give the same digest on any machine.

use std::collections::BTreeMap;

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

/// An image layer's media type (a gzipped tar), as the OCI image spec names it.
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

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
    let cache = cache_dir();
    if let Some(blob) = cache.as_deref().and_then(|dir| cached(dir, &diff_id)) {
        return Ok(Layer {
            digest: sha256(&blob),
            diff_id,
            blob,
            media_type: LAYER_TYPE.to_owned(),
        });
    }
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    std::io::Write::write_all(&mut gz, &tar)?;
    let blob = gz.finish()?;
    let digest = sha256(&blob);
    if let Some(dir) = cache {
        store(&dir, &diff_id, &digest, &blob);
    }
    Ok(Layer {
        digest,
        diff_id,
        blob,
        media_type: LAYER_TYPE.to_owned(),
    })
}

/// Compressed layers by their content (`diff_id`): compressing is most of an unchanged
/// push's work, and the same tar always compresses to the same blob. The key names the
/// compressor, so another gzip setting never reuses a blob; each file names its blob's
/// digest, checked on reading, so a damaged file is compressed again.
const CACHE_VERSION: &str = "gzip6-v1";
/// Layers kept: a few builds' worth of app and base layers.
const CACHE_KEEP: usize = 8;

/// `DEPLOYER_CACHE_DIR`, else `$XDG_CACHE_HOME/deployer/layers`, else
/// `~/.cache/deployer/layers`; `None` (no cache) when none is known or it is `off`.
fn cache_dir() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("DEPLOYER_CACHE_DIR") {
        return (dir != "off").then(|| dir.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    Some(base.join("deployer/layers"))
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn cached(dir: &std::path::Path, diff_id: &str) -> Option<Vec<u8>> {
    let prefix = format!("{CACHE_VERSION}-{}-", hex(diff_id));
    let entry = std::fs::read_dir(dir).ok()?.flatten().find(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.starts_with(&prefix) && name.ends_with(".gz")
    })?;
    let name = entry.file_name().to_string_lossy().into_owned();
    let want = name.strip_prefix(&prefix)?.strip_suffix(".gz")?.to_owned();
    let blob = std::fs::read(entry.path()).ok()?;
    if hex(&sha256(&blob)) == want {
        // Touched, so the ones in use stay.
        if let Ok(f) = std::fs::File::options().append(true).open(entry.path()) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Some(blob)
    } else {
        let _ = std::fs::remove_file(entry.path());
        None
    }
}

/// Best effort: a cache that cannot be written only costs the next push the work.
fn store(dir: &std::path::Path, diff_id: &str, digest: &str, blob: &[u8]) {
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let name = format!("{CACHE_VERSION}-{}-{}.gz", hex(diff_id), hex(digest));
    // A name no other writer (another process, another container on a shared cache)
    // picks; a partial file a crash left is not a `.gz` and is pruned in time.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let partial = dir.join(format!("{name}.{}-{nanos}.partial", std::process::id()));
    if std::fs::write(&partial, blob).is_err()
        || std::fs::rename(&partial, dir.join(&name)).is_err()
    {
        let _ = std::fs::remove_file(&partial);
        return;
    }
    let mut entries: Vec<(std::time::SystemTime, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    entries.sort();
    for (_, old) in entries.iter().rev().skip(CACHE_KEEP) {
        let _ = std::fs::remove_file(old);
    }
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
    fn a_cached_layer_is_reused_only_while_it_matches_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let blob = b"compressed".to_vec();
        let digest = sha256(&blob);
        store(dir.path(), "sha256:aa", &digest, &blob);
        assert_eq!(cached(dir.path(), "sha256:aa"), Some(blob));
        assert_eq!(cached(dir.path(), "sha256:bb"), None);
        // A damaged file is dropped, and the layer compressed again.
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&file, b"damaged").unwrap();
        assert_eq!(cached(dir.path(), "sha256:aa"), None);
        assert!(!file.exists());
        // Only the newest few stay.
        for n in 0..CACHE_KEEP + 3 {
            let blob = format!("layer {n}").into_bytes();
            store(dir.path(), &format!("sha256:{n:02}"), &sha256(&blob), &blob);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), CACHE_KEEP);
    }

    #[test]
    fn parents_are_created_as_directories() {
        let mut f = Files::default();
        f.file("/a/b/c", 0o644, Vec::new());
        let names: Vec<&String> = f.0.keys().collect();
        assert_eq!(names, ["a", "a/b", "a/b/c"]);
    }
}
