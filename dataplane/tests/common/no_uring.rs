//! Running a test where io_uring is refused: a seccomp filter on
//! `io_uring_setup`, applied in a child process that runs the test alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Whether io_uring can be set up in this process.
pub(crate) fn io_uring_usable() -> bool {
    io_uring::IoUring::new(8).is_ok()
}

/// What the re-executed test does under a filter that refuses io_uring.
pub(crate) const NO_URING_CHILD: &str = "RVOIP_TEST_IO_URING_REFUSED";

/// Runs the test `name` of this binary again, by itself, in a child process
/// with `env` set (its threads are then the only ones, or a filter applies
/// to it alone); fails unless it passes, and returns what it printed.
pub(crate) fn run_alone(name: &str, env: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    eprint!("{stderr}");
    stdout
}

/// Refuses `io_uring_setup` (EPERM, as a container's seccomp profile or
/// `kernel.io_uring_disabled` would) for this thread and the threads it
/// starts.
#[allow(unsafe_code)]
pub(crate) fn refuse_io_uring() {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let nr = u32::try_from(libc::SYS_io_uring_setup).expect("syscall number");
    let filter = [
        libc::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        }, // seccomp_data.nr
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: nr,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with a filter program that outlives the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                std::ptr::from_ref(&prog),
            ),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}
