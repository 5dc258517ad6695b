//! Free space on a worker's disks, checked before a download so that a full disk
//! fails the job with the numbers instead of a half-written file.

use std::path::Path;

/// Bytes available to this process on the file system holding `path` (or its
/// nearest existing ancestor: the file to download does not exist yet).
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    statvfs_available(existing)
}

#[cfg(unix)]
fn statvfs_available(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a writable
    // statvfs that the call fills in when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: filled in by the successful call above.
    let stat = unsafe { stat.assume_init() };
    // u64 on 64-bit Linux, narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(not(unix))]
fn statvfs_available(_path: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_measured_on_its_nearest_folder() {
        let dir = tempfile::tempdir().unwrap();
        let here = available_bytes(dir.path()).unwrap();
        let deeper = available_bytes(&dir.path().join("a/b/c.safetensors")).unwrap();
        assert!(here > 0);
        // Same file system; other processes may write in between.
        let diff = here.abs_diff(deeper);
        assert!(diff < 64 * 1024 * 1024, "{here} vs {deeper}");
    }
}
