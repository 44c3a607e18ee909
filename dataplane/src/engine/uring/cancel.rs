//! Cancelling a request in flight by its user data (a multishot receive
//! on a socket being closed).

use io_uring::opcode;
use io_uring::squeue::Entry;

/// Cancels the request submitted with `target` as its user data; the
/// cancel's own completion carries `user_data`.
pub fn request(target: u64, user_data: u64) -> Entry {
    opcode::AsyncCancel::new(target)
        .build()
        .user_data(user_data)
}
