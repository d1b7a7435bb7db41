//! A single-threaded broadcast notification: waiters park until the next `notify_all`.
//!
//! The log runs on one executor thread, so a generation counter and a waker list in cells are
//! enough; no lock, no atomic.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub(crate) struct Notify {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    /// A future that completes at the first `notify_all` after this call.
    ///
    /// The generation is read here, not at first poll, so a notification between `listen`
    /// and the first poll is not missed.
    pub(crate) fn listen(&self) -> Listen<'_> {
        Listen {
            notify: self,
            generation: self.generation.get(),
        }
    }

    pub(crate) fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }
}

pub(crate) struct Listen<'a> {
    notify: &'a Notify,
    generation: u64,
}

impl Future for Listen<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut wakers = self.notify.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn listeners_wake_on_notify_and_not_before() {
        glommio::LocalExecutor::default().run(async {
            let n = Rc::new(Notify::default());
            let woke = Rc::new(Cell::new(0));
            let mut tasks = Vec::new();
            for _ in 0..3 {
                let (n, woke) = (n.clone(), woke.clone());
                tasks.push(glommio::spawn_local(async move {
                    n.listen().await;
                    woke.set(woke.get() + 1);
                }));
            }
            glommio::yield_if_needed().await;
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            assert_eq!(woke.get(), 0);
            n.notify_all();
            for t in tasks {
                t.await;
            }
            assert_eq!(woke.get(), 3);
        });
    }

    #[test]
    fn a_notify_between_listen_and_poll_is_not_lost() {
        glommio::LocalExecutor::default().run(async {
            let n = Notify::default();
            let l = n.listen();
            n.notify_all();
            l.await;
        });
    }
}
