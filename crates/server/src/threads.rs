//! Where the broker's threads run: each shard pinned to one CPU of those the process may use
//! (`shard_cpu_pinning`), the blocking pools free to run on any of them and below the shards'
//! priority.

/// Nice value of the blocking pools' threads (the shards run at the process's). When the
/// cores are short, the reactors, which answer every client, win over bulk appends of large
/// batches: those slow down (pushing back on their producers), small requests do not.
const BLOCKING_THREADS_NICE: libc::c_int = 5;

/// The CPUs the calling thread may run on (empty where this cannot be known).
pub(crate) fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: cpu_set_t is plain data, valid zeroed; sched_getaffinity writes at most the
        // size it is given into it, and CPU_ISSET reads it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            if libc::sched_getaffinity(0, size, &mut set) != 0 {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect()
        }
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

/// Lets the calling thread run only on `cpus`; false if that failed (it then runs where it
/// did).
pub(crate) fn run_on(cpus: &[usize]) -> bool {
    #[cfg(target_os = "linux")]
    {
        if cpus.is_empty() {
            return false;
        }
        // SAFETY: as in `allowed_cpus`; only CPUs the set can hold are put in it, and
        // sched_setaffinity with 0 names the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
                libc::CPU_SET(cpu, &mut set);
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpus;
        false
    }
}

/// Runs on every blocking-pool thread as it starts: lowers its priority and, since a thread
/// starts with its creator's CPUs, which for a pinned shard is one, lets it run on `cpus`.
pub(crate) fn below_the_reactors(cpus: &[usize]) {
    run_on(cpus);
    // SAFETY: setpriority only reads its arguments; on Linux, PRIO_PROCESS with 0 names the
    // calling thread (nice is per thread; elsewhere it would name the whole process, so it is
    // Linux only). A failure leaves the priority as it was.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, BLOCKING_THREADS_NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_thread_is_pinned_and_set_free_again() {
        let all = allowed_cpus();
        assert!(!all.is_empty());
        let pinned = std::thread::spawn(move || {
            assert!(run_on(&all[..1]));
            let one = allowed_cpus();
            assert!(run_on(&all));
            (one, allowed_cpus(), all)
        })
        .join()
        .expect("thread");
        assert_eq!(pinned.0, pinned.2[..1]);
        assert_eq!(pinned.1, pinned.2);
    }
}
