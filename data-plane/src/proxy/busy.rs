//! Busy polling (`sluice-dp --busy-polling[=WINDOW]`, HAProxy's `busy-polling`): a
//! thread that serves connections polls for I/O instead of sleeping between events —
//! always, or only within `WINDOW` of the last traffic it moved.
//!
//! Why: a thread that sleeps in `epoll_wait` is woken by the kernel when an event
//! arrives, and on a virtual machine whose idle CPUs halt (guest halt polling off) that
//! wake-up goes through the hypervisor and costs tens of microseconds — per message, most
//! of the latency a proxy adds there (BENCHMARKS.md, `busylatency`). Polling keeps the
//! CPU running: always, as HAProxy does, at the cost of a whole core even when idle; or
//! within a window after traffic, which catches the answer to a message and the next
//! message of a busy tunnel while an idle node still sleeps.
//!
//! How, on tokio's single-threaded runtime: the runtime's park hook ([`before_park`])
//! runs whenever the thread has no task left to run and is about to sleep; when polling
//! is due it wakes [`poller`], a task that does nothing, so the runtime has work and
//! polls its I/O driver with a zero timeout instead of sleeping, runs what became ready,
//! and comes back to the hook. Traffic is what the proxy reports through [`active`]
//! (accepted connections, requests, bytes moved by tunnels): a thread-local count, no
//! atomic and no system call.

use std::cell::{Cell, RefCell};
use std::str::FromStr;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// When a thread that serves connections polls instead of sleeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusyPolling {
    /// Always, idle or not (HAProxy's `busy-polling`).
    Always,
    /// Within this long of the last traffic the thread moved.
    Within(Duration),
}

/// `BusyPolling` from `always` or a duration (`200us`, `1ms`).
#[derive(Debug, thiserror::Error)]
#[error("busy polling is `always` or a duration such as `200us` ({0})")]
pub struct ParseError(humantime::DurationError);

impl FromStr for BusyPolling {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "always" {
            return Ok(BusyPolling::Always);
        }
        humantime::parse_duration(s)
            .map(BusyPolling::Within)
            .map_err(ParseError)
    }
}

thread_local! {
    /// Traffic moved on this thread, counted by [`active`].
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
    /// This thread's poller, once [`poller`] runs on it.
    static POLLER: RefCell<Option<Poller>> = const { RefCell::new(None) };
}

struct Poller {
    /// `None`: always.
    window: Option<Duration>,
    /// [`ACTIVITY`] when the hook last looked, and when it saw it change (never yet:
    /// a node that has moved no traffic does not poll).
    seen: u64,
    last: Option<Instant>,
    /// The [`poller`] task's waker.
    waker: Option<Waker>,
}

/// Notes that this thread moved traffic: polling within a window goes on for that long.
#[inline]
pub fn active() {
    ACTIVITY.with(|a| a.set(a.get().wrapping_add(1)));
}

/// The runtime's park hook (`Builder::on_thread_park`): wakes this thread's [`poller`]
/// when polling is due, so the runtime polls instead of sleeping.
pub fn before_park() {
    POLLER.with(|p| {
        let mut p = p.borrow_mut();
        let Some(p) = p.as_mut() else { return };
        if let Some(window) = p.window {
            let now = Instant::now();
            let count = ACTIVITY.with(Cell::get);
            if count != p.seen {
                p.seen = count;
                p.last = Some(now);
            } else if p.last.is_none_or(|last| now.duration_since(last) >= window) {
                return;
            }
        }
        if let Some(waker) = &p.waker {
            waker.wake_by_ref();
        }
    });
}

/// The task [`before_park`] wakes to keep the current runtime polling; runs for as long
/// as the runtime does. The runtime must have been built with [`before_park`] as its
/// park hook.
pub async fn poller(mode: BusyPolling) {
    POLLER.with(|p| {
        *p.borrow_mut() = Some(Poller {
            window: match mode {
                BusyPolling::Always => None,
                BusyPolling::Within(w) => Some(w),
            },
            seen: ACTIVITY.with(Cell::get),
            last: None,
            waker: None,
        });
    });
    std::future::poll_fn(|cx| {
        POLLER.with(|p| {
            if let Some(p) = p.borrow_mut().as_mut() {
                if !p.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    p.waker = Some(cx.waker().clone());
                }
            }
        });
        Poll::<()>::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_is_always_or_a_window() {
        assert_eq!(
            "always".parse::<BusyPolling>().unwrap(),
            BusyPolling::Always
        );
        assert_eq!(
            "200us".parse::<BusyPolling>().unwrap(),
            BusyPolling::Within(Duration::from_micros(200))
        );
        let err = "sometimes".parse::<BusyPolling>().unwrap_err().to_string();
        assert!(err.contains("`always` or a duration"), "{err}");
    }
}
