//! The one IO function of write-back: an atomic replace that keeps the
//! file's mode and owner and never writes through a link leading outside.

#[allow(unused_imports)]
use super::*;

/// What [`write_atomic`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The file that was replaced or created: the path itself, or the target
    /// of a symbolic link (the link is left in place).
    pub written_path: PathBuf,
    /// SHA-256 of the contents, so the agent can recognise the file events
    /// caused by its own write and not start another sync (SPEC §5 rule 6).
    pub digest: [u8; 32],
    /// Things the caller should report but that did not stop the write
    /// (an owner that could not be kept, other hard links, a followed link).
    pub notes: Vec<String>,
}

/// Most symbolic links followed for one path (Linux's own limit is 40).
const MAX_SYMLINKS: usize = 40;
/// Attempts at finding an unused temp file name.
const TEMP_ATTEMPTS: usize = 16;

/// Atomically replaces the file at `path` with `contents` (or creates it).
///
/// Steps: a temp file is created in the same directory (`O_CREAT|O_EXCL`,
/// mode 0600, named `.secretsync-write-<random>.tmp`, which no `.env`/YAML
/// pattern matches), given the original's owner and group when permitted
/// (`fchown`) and then the original's mode (0600 for a new file), written,
/// fsynced, renamed over the path, and the directory is fsynced.
///
/// Why: readers (the application, the agent's own watcher) see either the
/// old or the new file, never a partial one; a crash leaves the old file
/// (plus at worst a stray temp file); the content is never more exposed
/// than either version of the file; and the rename keeps the old inode
/// intact for anyone holding it open.
///
/// Ownership: if `fchown` is not permitted (the agent is not root), the
/// owner (and, if that is not permitted either, the group) becomes the
/// agent's, and [`WriteOutcome::notes`] says so; the write still happens,
/// since the mode still protects the content. Other hard links of the file
/// keep the old content (noted too).
///
/// Symbolic links: a link whose target lies inside the link's directory
/// (that directory or below it, after resolving every link in the chain and
/// in the directories) is followed and its target replaced, so the link
/// stays a link; a dangling one gets its target created. A target outside
/// is refused with [`WriteBackError::Symlink`] unless
/// `allow_outside_symlink`, because a link planted in a watched directory
/// must not turn the agent into a writer of arbitrary files.
///
/// Creates the file, and nothing else: a missing parent directory is an
/// [`WriteBackError::Io`] error. A path that is not a regular file (a
/// directory, a device) is refused.
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    allow_outside_symlink: bool,
) -> Result<WriteOutcome, WriteBackError> {
    let mut notes = Vec::new();
    let target = resolve_target(path, allow_outside_symlink, &mut notes)?;
    let dir = parent_dir(&target);
    let existing = match fs::metadata(&target) {
        Ok(m) if m.is_file() => Some(m),
        Ok(_) => {
            return Err(io_error(
                &target,
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(&target, e)),
    };
    if let Some(m) = &existing
        && m.nlink() > 1
    {
        notes.push(format!(
            "{} had {} hard links; only this name gets the new content",
            target.display(),
            m.nlink()
        ));
    }
    let (tmp_path, mut file) = create_temp(&dir)?;
    let result = (|| {
        if let Some(m) = &existing {
            keep_owner(&file, &tmp_path, &target, m, &mut notes)?;
        }
        let mode = existing.as_ref().map_or(0o600, |m| m.mode() & 0o7777);
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| io_error(&tmp_path, e))?;
        file.write_all(contents)
            .map_err(|e| io_error(&tmp_path, e))?;
        file.sync_all().map_err(|e| io_error(&tmp_path, e))?;
        fs::rename(&tmp_path, &target).map_err(|e| io_error(&target, e))
    })();
    drop(file);
    if let Err(e) = result {
        // Best effort: the temp file holds the new content and must not stay.
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(&dir, e))?;
    Ok(WriteOutcome {
        written_path: target,
        digest: Sha256::digest(contents).into(),
        notes,
    })
}

// ---------------------------------------------------------------------------
// Files

fn io_error(path: &Path, source: io::Error) -> WriteBackError {
    WriteBackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The file to replace for `path`: `path` itself, or the final target of a
/// chain of symbolic links (checked against the link's directory).
fn resolve_target(
    path: &Path,
    allow_outside: bool,
    notes: &mut Vec<String>,
) -> Result<PathBuf, WriteBackError> {
    let mut current = path.to_path_buf();
    let mut followed = false;
    let mut resolved = false;
    for _ in 0..MAX_SYMLINKS {
        match fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = fs::read_link(&current).map_err(|e| io_error(&current, e))?;
                current = parent_dir(&current).join(link);
                followed = true;
            }
            Ok(_) => {
                resolved = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                resolved = true;
                break;
            }
            Err(e) => return Err(io_error(&current, e)),
        }
    }
    if !resolved {
        return Err(io_error(
            path,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many levels of symbolic links",
            ),
        ));
    }
    if !followed {
        return Ok(path.to_path_buf());
    }
    let name = match current.file_name() {
        Some(name) => name.to_owned(),
        None => {
            return Err(io_error(
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "symbolic link to a directory"),
            ));
        }
    };
    let target_dir = parent_dir(&current);
    let target_dir = fs::canonicalize(&target_dir).map_err(|e| io_error(&target_dir, e))?;
    let link_dir = parent_dir(path);
    let link_dir = fs::canonicalize(&link_dir).map_err(|e| io_error(&link_dir, e))?;
    let target = target_dir.join(name);
    if !target_dir.starts_with(&link_dir) {
        if !allow_outside {
            return Err(WriteBackError::Symlink {
                path: path.to_path_buf(),
                target,
            });
        }
        notes.push(format!(
            "{} is a symbolic link outside its directory; wrote {} as allowed",
            path.display(),
            target.display()
        ));
    }
    Ok(target)
}

/// Creates a new, empty, mode-0600 temp file in `dir` (never following or
/// reusing an existing name).
fn create_temp(dir: &Path) -> Result<(PathBuf, fs::File), WriteBackError> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(format!(".secretsync-write-{:016x}.tmp", fastrand::u64(..)));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            // Reported on the directory: that is what the user must fix.
            Err(e) => return Err(io_error(dir, e)),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::other("no unused temp file name"));
    Err(io_error(dir, e))
}

/// Gives the temp file the original's owner and group where permitted.
/// Not being allowed to (the agent is not root) is a note, not an error:
/// the content must still arrive, and the mode keeps it private.
fn keep_owner(
    file: &fs::File,
    tmp_path: &Path,
    target: &Path,
    original: &fs::Metadata,
    notes: &mut Vec<String>,
) -> Result<(), WriteBackError> {
    let current = file.metadata().map_err(|e| io_error(tmp_path, e))?;
    let (uid, gid) = (original.uid(), original.gid());
    if current.uid() == uid && current.gid() == gid {
        return Ok(());
    }
    let denied = |e: &io::Error| e.kind() == io::ErrorKind::PermissionDenied;
    match std::os::unix::fs::fchown(file, Some(uid), Some(gid)) {
        Ok(()) => return Ok(()),
        Err(e) if denied(&e) => {}
        Err(e) => return Err(io_error(tmp_path, e)),
    }
    if current.uid() != uid {
        notes.push(format!(
            "{}: could not keep owner uid {uid} (not permitted); it is now owned by uid {}",
            target.display(),
            current.uid()
        ));
    }
    if current.gid() != gid {
        match std::os::unix::fs::fchown(file, None, Some(gid)) {
            Ok(()) => {}
            Err(e) if denied(&e) => notes.push(format!(
                "{}: could not keep group gid {gid} (not permitted); its group is now gid {}",
                target.display(),
                current.gid()
            )),
            Err(e) => return Err(io_error(tmp_path, e)),
        }
    }
    Ok(())
}
