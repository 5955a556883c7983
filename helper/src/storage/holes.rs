//! Holes dug again into restored files that had them: restic before 0.15 restores a
//! sparse file with its zeros written out.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FallocateFlags, Mode, OFlags, ResolveFlags};

const BLOCK: usize = 64 << 10;

/// Punches every all-zero 64 KiB block of each file `rel` below `root` (resolved inside
/// it: a restored tree holds the slot's own symlinks). Returns the files done.
pub fn dig(root: &Path, files: &[PathBuf]) -> std::io::Result<usize> {
    let dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut done = 0;
    let mut buf = vec![0u8; BLOCK];
    for rel in files {
        let Ok(f) = rustix::fs::openat2(
            dir.as_fd(),
            rel,
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) else {
            continue;
        };
        let st = rustix::fs::fstat(&f)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        let size = st.st_size as u64;
        let mut off = 0u64;
        while off < size {
            let n = rustix::io::pread(&f, &mut buf, off)?;
            if n == 0 {
                break;
            }
            if n == BLOCK && buf.iter().all(|b| *b == 0) {
                rustix::fs::fallocate(
                    &f,
                    FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                    off,
                    n as u64,
                )?;
            }
            off += n as u64;
        }
        // Punching a hole sets mtime: put back the one restored.
        rustix::fs::futimens(
            &f,
            &rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: st.st_atime,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: st.st_mtime,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            },
        )?;
        done += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_become_holes_and_data_stays() {
        let d = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 4 << 20];
        data[100] = 1;
        data[(4 << 20) - 1] = 2;
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), &data).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        let before = std::fs::metadata(d.path().join("sub/f")).unwrap();
        let n = super::dig(d.path(), &["sub/f".into(), "link".into(), "missing".into()]).unwrap();
        assert_eq!(n, 1);
        assert_eq!(std::fs::read(d.path().join("sub/f")).unwrap(), data);
        let m = std::fs::metadata(d.path().join("sub/f")).unwrap();
        assert!(m.blocks() * 512 <= 256 << 10, "{} blocks", m.blocks());
        assert_eq!(
            (m.mtime(), m.mtime_nsec()),
            (before.mtime(), before.mtime_nsec()),
            "mtime kept"
        );
    }
}
