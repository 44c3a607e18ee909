//! Readiness polls: `POLLIN` (multishot, for a listener or a connection
//! that keeps being readable) and one-shot `POLLOUT` (a connect finishing,
//! a send buffer draining), and removing a poll by its user data.

use std::os::fd::RawFd;

use io_uring::opcode;
use io_uring::squeue::Entry;
use io_uring::types::Fd;

/// A poll for readability of `fd`; `multi` keeps it armed.
pub fn readable(fd: RawFd, multi: bool, user_data: u64) -> Entry {
    opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
        .multi(multi)
        .build()
        .user_data(user_data)
}

/// A one-shot poll for writability of `fd`.
pub fn writable(fd: RawFd, user_data: u64) -> Entry {
    opcode::PollAdd::new(Fd(fd), libc::POLLOUT as u32)
        .build()
        .user_data(user_data)
}

/// Removes the poll armed with `target` as its user data; the removal's
/// own completion carries `user_data`.
pub fn remove(target: u64, user_data: u64) -> Entry {
    opcode::PollRemove::new(target).build().user_data(user_data)
}
