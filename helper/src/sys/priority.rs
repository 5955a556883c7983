//! Running the calling thread ahead of others for a short critical window: while a slot is
//! frozen for a capture, its services wait for our walk, so the walk should not wait behind
//! the host's other work (nor behind our own unit's `Nice=10`, `IOSchedulingClass=idle`).

/// The thread's CPU and I/O priority raised until dropped, then put back.
pub struct Boost {
    nice: Option<i32>,
    ioprio: Option<i32>,
}

const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_SHIFT: i32 = 13;
const IOPRIO_CLASS_BE: i32 = 2;

fn ioprio_get() -> Option<i32> {
    // SAFETY: ioprio_get(IOPRIO_WHO_PROCESS, 0) reads the calling thread's I/O priority.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
    (r >= 0).then_some(r as i32)
}

fn ioprio_set(v: i32) -> bool {
    // SAFETY: sets the calling thread's I/O priority to a valid class/level value.
    unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, v) == 0 }
}

fn nice_get() -> Option<i32> {
    // getpriority may return -1 legitimately: errno tells.
    // SAFETY: plain syscalls on the calling thread; errno is thread-local.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, 0);
        (*libc::__errno_location() == 0).then_some(n)
    }
}

fn nice_set(n: i32) -> bool {
    // SAFETY: PRIO_PROCESS with who = 0 is the calling thread on Linux.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) == 0 }
}

impl Boost {
    /// Nice -10 and best-effort I/O at level 0 for this thread (what root may ask; nothing
    /// changes where it may not).
    pub fn raise() -> Boost {
        let nice = nice_get().filter(|_| nice_set(-10));
        let ioprio = ioprio_get().filter(|_| ioprio_set(IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT));
        Boost { nice, ioprio }
    }

    /// The other way: nice 10 and best-effort I/O at level 7 (the lowest that still moves
    /// on a busy disk), unless the thread is already at least that low; for work that must
    /// not slow down what it copies from (a running slot).
    pub fn yield_to_others() -> Boost {
        let nice = nice_get().filter(|n| *n < 10 && nice_set(10));
        let ioprio = ioprio_get().filter(|p| {
            (p >> IOPRIO_CLASS_SHIFT) < 3 && ioprio_set((IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 7)
        });
        Boost { nice, ioprio }
    }
}

impl Drop for Boost {
    fn drop(&mut self) {
        if let Some(n) = self.nice {
            nice_set(n);
        }
        if let Some(p) = self.ioprio {
            ioprio_set(p);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn priority_is_raised_then_put_back() {
        let (n0, p0) = (super::nice_get(), super::ioprio_get());
        {
            let _b = super::Boost::raise();
            if rustix::process::geteuid().is_root() {
                assert_eq!(super::nice_get(), Some(-10));
                assert_eq!(super::ioprio_get(), Some(2 << 13));
            }
        }
        assert_eq!((super::nice_get(), super::ioprio_get()), (n0, p0));
        {
            let _b = super::Boost::yield_to_others();
            assert!(super::nice_get().is_some_and(|n| n >= 10));
        }
        assert_eq!((super::nice_get(), super::ioprio_get()), (n0, p0));
    }
}
