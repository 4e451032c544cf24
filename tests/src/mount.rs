//! Small filesystems for full-disk (ENOSPC) tests: a size-limited tmpfs on a
//! temporary directory, unmounted on drop. Needs root (`mount`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::CommandExt;

/// A mounted tmpfs of a fixed size.
pub struct Tmpfs {
    path: PathBuf,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_bytes` on a fresh temporary directory.
    pub fn mount(size_bytes: u64) -> Tmpfs {
        let dir = crate::temp_dir("tmpfs");
        let path = dir.path().join("mnt");
        std::fs::create_dir_all(&path).expect("create the mount point");
        Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_bytes},mode=0755"),
                "e2e-tmpfs",
            ])
            .arg(&path)
            .ok();
        Tmpfs {
            path,
            mounted: true,
            _dir: dir,
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            // Lazy: a process still holding a file there must not make the
            // unmount (and so the cleanup) fail.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            self.mounted = false;
        }
    }
}
