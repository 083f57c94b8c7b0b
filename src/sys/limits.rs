//! A worker's limits on itself: its CPU-time and address-space limits (`RLIMIT_CPU`,
//! `RLIMIT_AS`), its niceness, its CPU affinity, and its resident and mapped sizes.
//! All through `rustix`'s safe wrappers, and `/proc/self/statm`.

use std::io;
use std::time::Duration;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use rustix::thread::CpuSet;

/// CPU time this process has used, user and system.
pub(crate) fn cpu_time_used() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Sets the soft `RLIMIT_CPU` to `secs` seconds of CPU time in all (the kernel sends
/// `SIGXCPU` when the process reaches it), keeping the hard limit. A soft limit above
/// the hard one is lowered to it.
pub(crate) fn set_cpu_time_limit(secs: u64) -> io::Result<()> {
    set_soft_limit(Resource::Cpu, secs)
}

/// Sets the soft `RLIMIT_AS` to `bytes` of address space, keeping the hard limit (a
/// soft limit above the hard one is lowered to it). An allocation past it fails.
pub(crate) fn set_address_space_limit(bytes: u64) -> io::Result<()> {
    set_soft_limit(Resource::As, bytes)
}

/// Sets the soft limit of `resource` to `value`, keeping the hard limit; a value
/// above the hard limit is lowered to it.
fn set_soft_limit(resource: Resource, value: u64) -> io::Result<()> {
    let hard = getrlimit(resource).maximum;
    let soft = match hard {
        Some(h) => value.min(h),
        None => value,
    };
    setrlimit(
        resource,
        Rlimit {
            current: Some(soft),
            maximum: hard,
        },
    )
    .map_err(io::Error::from)
}

/// Sets this process's niceness (-20 to 19; lowering it needs `CAP_SYS_NICE`).
pub(crate) fn set_nice(nice: i32) -> io::Result<()> {
    rustix::process::setpriority_process(None, nice).map_err(io::Error::from)
}

/// Restricts this process to the CPUs `cpus`.
pub(crate) fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        if cpu >= CpuSet::MAX_CPU {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        set.set(cpu);
    }
    rustix::thread::sched_setaffinity(None, &set).map_err(io::Error::from)
}

/// The CPUs this process may run on.
pub(crate) fn affinity() -> io::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    Ok((0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
}

/// Bytes of this process resident in memory (its RSS), from `/proc/self/statm`.
pub(crate) fn resident_bytes() -> io::Result<u64> {
    statm_bytes(1)
}

/// Bytes of address space this process has mapped (its `VmSize`, what `RLIMIT_AS`
/// counts), from `/proc/self/statm`.
pub(crate) fn mapped_bytes() -> io::Result<u64> {
    statm_bytes(0)
}

/// Field `i` of `/proc/self/statm`, in bytes.
fn statm_bytes(i: usize) -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(i)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/self/statm"))?;
    Ok(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_its_own_figures() {
        assert!(resident_bytes().unwrap() > 0);
        assert!(mapped_bytes().unwrap() >= resident_bytes().unwrap());
        let cpus = affinity().unwrap();
        assert!(!cpus.is_empty());
        let before = cpu_time_used();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(cpu_time_used() > before);
    }
}
