//! A wait on a 32-bit word in shared memory (FUTEX2): the completion
//! comes when another process wakes the word, so a loop sleeps in its own
//! ring enter while it waits for the control plane.

use io_uring::opcode;
use io_uring::squeue::Entry;

/// futex2 flag: the word is 32 bits.
const FUTEX2_SIZE_U32: u32 = 0x02;

/// A wait on `word` while it holds `expected`.
pub fn wait(word: *const u32, expected: u64, user_data: u64) -> Entry {
    opcode::FutexWait::new(word, expected, u64::from(u32::MAX), FUTEX2_SIZE_U32)
        .build()
        .user_data(user_data)
}
