//! Work spread over a bounded number of threads, results kept in the order of the input:
//! for per-slot steps that wait on child processes or the kernel (a new slot's SSH host
//! keys, a root's identity), where one slot at a time leaves the CPUs idle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One worker per CPU (the steps this is for are CPU-bound: RSA key generation).
pub fn per_cpu() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` on every item, at most `workers` at once (at least one), results in input order.
pub fn map<T: Sync, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = workers.clamp(1, items.len().max(1));
    if workers == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                out.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item was taken by a worker"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn keeps_order_and_its_bound() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        // The first three items meet: they can only pass if three workers run at once.
        let meet = std::sync::Barrier::new(3);
        let items: Vec<u32> = (0..40).collect();
        let out = map(&items, 3, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            if *i < 3 {
                meet.wait();
            }
            running.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 3, "three at once, never more");
        assert!(map(&Vec::<u32>::new(), 4, |i| *i).is_empty());
    }
}
