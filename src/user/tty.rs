//! The terminal's modes while the interactive client waits for a line to finish: echo off,
//! and whether a key is waiting.

use std::time::Duration;

use nix::sys::termios;

/// Terminal echo and line editing off while the guard lives (nothing when stdin is no
/// terminal); restored on drop.
pub struct EchoOff<'fd> {
    fd: std::os::fd::BorrowedFd<'fd>,
    saved: Option<termios::Termios>,
}

impl<'fd> EchoOff<'fd> {
    /// Turns echo, line editing and signal keys off on `fd` until the guard drops.
    pub fn new(fd: std::os::fd::BorrowedFd<'fd>) -> EchoOff<'fd> {
        let saved = termios::tcgetattr(fd).ok();
        if let Some(saved) = &saved {
            let mut quiet = saved.clone();
            // ISIG too: Ctrl-C is then a key for the editor (clearing the line), not a signal
            // that would end the client.
            quiet.local_flags.remove(
                termios::LocalFlags::ECHO | termios::LocalFlags::ICANON | termios::LocalFlags::ISIG,
            );
            let _ = termios::tcsetattr(fd, termios::SetArg::TCSANOW, &quiet);
        }
        EchoOff { fd, saved }
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(self.fd, termios::SetArg::TCSANOW, saved);
        }
    }
}

/// Whether a key is waiting on `fd`, waiting up to `wait` for one.
pub fn typed(fd: std::os::fd::BorrowedFd<'_>, wait: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::ZERO);
    poll(&mut fds, timeout).is_ok_and(|n| n > 0)
}
