//! The package as one `.tar.gz` (`evidence export -o FILE.tar.gz`,
//! `evidence verify FILE.tar.gz`): every file under one top-level directory
//! named after the archive. Reading is for hostile archives: only regular
//! files and directories, each path relative and inside that directory (no
//! `..`, no absolute path, no link), at most [`MAX_MEMBERS`] members and
//! [`MAX_BYTES`] unpacked; anything else is refused, naming the member.

use std::fs::File;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::{EvidenceError, io};

/// Most members an archive may have.
pub const MAX_MEMBERS: usize = 100_000;
/// Most bytes its members may unpack to.
pub const MAX_BYTES: u64 = 4 << 30;

/// Whether `path` names an archive rather than a directory.
pub fn is_archive(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
    name.is_some_and(|n| n.ends_with(".tar.gz") || n.ends_with(".tgz"))
}

/// The top-level directory of the archive at `path` (`evidence.tar.gz` → `evidence`).
pub fn top_dir(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "evidence".into());
    let stem = name
        .strip_suffix(".tar.gz")
        .or_else(|| name.strip_suffix(".tgz"))
        .unwrap_or(&name);
    if stem.is_empty() || stem == "." || stem == ".." {
        "evidence".into()
    } else {
        stem.to_string()
    }
}

/// Writes the package directory `dir` as the archive `out` (files in
/// sorted order, under [`top_dir`]).
pub fn pack(dir: &Path, out: &Path) -> Result<(), EvidenceError> {
    let file = File::create(out).map_err(io("cannot write", out))?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    tar.append_dir_all(top_dir(out), dir)
        .map_err(io("cannot archive", dir))?;
    let gz = tar.into_inner().map_err(io("cannot write", out))?;
    gz.finish().map_err(io("cannot write", out))?;
    Ok(())
}

/// Unpacks the archive at `archive` into `into`, refusing members that are
/// not plain files or directories inside the top-level directory; returns
/// the package directory (`into/TOP`).
pub fn unpack(archive: &Path, into: &Path) -> Result<PathBuf, EvidenceError> {
    let file = File::open(archive).map_err(io("cannot read", archive))?;
    let mut tar = tar::Archive::new(GzDecoder::new(file));
    let bad = |what: String| EvidenceError::Usage(format!("{}: {what}", archive.display()));
    let mut top: Option<String> = None;
    let mut members = 0usize;
    let mut total = 0u64;
    for entry in tar.entries().map_err(io("cannot read", archive))? {
        let mut entry = entry.map_err(io("cannot read", archive))?;
        members += 1;
        if members > MAX_MEMBERS {
            return Err(bad(format!(
                "more than {MAX_MEMBERS} members: not an evidence package"
            )));
        }
        let raw = entry
            .path()
            .map_err(io("cannot read", archive))?
            .into_owned();
        let shown = raw.display().to_string();
        // Only normal components: no root, no `..`, no `.` games.
        let parts: Vec<String> = raw
            .components()
            .map(|c| match c {
                Component::Normal(p) => Ok(p.to_string_lossy().into_owned()),
                _ => Err(bad(format!(
                    "member {shown:?} is refused: its path leaves the package (absolute or `..`)"
                ))),
            })
            .collect::<Result<_, _>>()?;
        let Some((first, rest)) = parts.split_first() else {
            return Err(bad(format!("member {shown:?} has an empty path")));
        };
        match &top {
            None => top = Some(first.clone()),
            Some(t) if t == first => {}
            Some(t) => {
                return Err(bad(format!(
                    "member {shown:?} is outside the package directory {t:?}"
                )));
            }
        }
        let kind = entry.header().entry_type();
        let target = rest.iter().fold(into.join(first), |p, c| p.join(c));
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io("cannot create", &target))?;
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!(
                "member {shown:?} is refused: only regular files and directories belong in a package (it is a link or a device)"
            )));
        }
        let size = entry.header().size().map_err(io("cannot read", archive))?;
        total = total.saturating_add(size);
        if total > MAX_BYTES {
            return Err(bad(format!(
                "its members unpack to more than {} GiB: not an evidence package",
                MAX_BYTES >> 30
            )));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        }
        let mut bytes = Vec::with_capacity(size.min(1 << 20) as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(io("cannot read", archive))?;
        if target.exists() {
            return Err(bad(format!("member {shown:?} appears twice")));
        }
        std::fs::write(&target, bytes).map_err(io("cannot write", &target))?;
    }
    let top = top.ok_or_else(|| bad("the archive is empty".into()))?;
    Ok(into.join(top))
}
