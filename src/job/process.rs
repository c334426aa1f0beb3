//! Which process is which: a pid with its start time names one process
//! for good (pids are reused), so the journal can tell a live build from a
//! dead one and the reaper never kills a stranger.

/// Kills a process (or its group) if it is still the one we started.
pub fn kill_process(pid: i32, start_time: u64, group: bool) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    if process_start_time(pid) != Some(start_time) {
        // Gone, or the pid now belongs to someone else (reuse, a reboot):
        // killing by that number could hit an unrelated process group.
        return;
    }
    if group {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// The start time of a process in clock ticks since boot (`/proc/PID/stat`
/// field 22), which with the pid identifies a process uniquely.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when the kiln process that wrote an entry is still running.
pub fn owner_alive(pid: u32, start_time: u64) -> bool {
    process_start_time(pid as i32) == Some(start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_identifies_this_process() {
        let me = std::process::id() as i32;
        assert!(process_start_time(me).is_some());
        assert_eq!(process_start_time(i32::MAX), None);
    }
}
