//! Group commit across the logs of one thread: one `syncfs` makes every log on a filesystem
//! durable at once (`SyncScope::Filesystem`).
//!
//! A commit's O_DIRECT writes have completed when it asks to sync: the data sits in the
//! device's volatile cache, and the conversion of the unwritten extents it filled sits in
//! memory as dirty metadata (on ext4 with a journal, in the running transaction; without one,
//! as it runs on the CI machine, in dirty inode and extent blocks). `syncfs` writes all of it,
//! like an fdatasync of each file, but once for all of them: with 8 partitions committing on a
//! thread it replaces 8 fdatasyncs (8 io-wq workers, and a cache flush each) by one call.
//!
//! Then an fdatasync of the group's directory descriptor flushes the device's cache once more.
//! Linux's `sync_filesystem` asks the filesystem to flush (`sync_fs`) before its last wait for
//! the block device's dirty buffers (`sync_blockdev`), and ext4 without a journal keeps exactly
//! the extent and inode blocks there: a metadata write that completed after that flush was
//! issued would sit in the volatile cache when `syncfs` returns. The fdatasync's flush comes
//! after every one of them completed.
//!
//! The price is that `syncfs` also writes back every other dirty page of the filesystem: on a
//! filesystem that other programs write through the page cache, their writeback lengthens our
//! commits. So it is for a data directory with a filesystem of its own.
//!
//! A commit needs a sync that started after its writes completed. Syncs of one filesystem run
//! one at a time per thread: a commit that finds one running waits for it to end and then for
//! the next, which covers everyone who arrived meanwhile. Both calls run on the executor's
//! blocking thread pool (io_uring has no `syncfs`).
//!
//! Errors: a failed `syncfs` fails every commit that needed it, and also those waiting on an
//! earlier sync that succeeded but whose result they had not yet read (conservative: such a log
//! is poisoned and recovers on reopen). The descriptor each group syncs through stays open for
//! the thread's life, so the kernel's per-descriptor error sequence reports a writeback error
//! that happens between two syncs to the next one.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use crate::notify::Notify;

/// The logs of one thread on one filesystem.
pub(crate) struct SyncGroup {
    /// An open directory of the filesystem; `syncfs` needs any descriptor on it.
    fd: Arc<File>,
    /// Number of syncs started and finished; the next sync to start is `started + 1`.
    started: Cell<u64>,
    finished: Cell<u64>,
    /// The latest failed sync and why.
    failed: RefCell<Option<(u64, std::io::ErrorKind, String)>>,
    done: Notify,
}

thread_local! {
    /// Groups by device number, and how many syncs this thread ran (for tests and stats).
    static GROUPS: RefCell<HashMap<u64, Rc<SyncGroup>>> = RefCell::new(HashMap::new());
    static SYNCS: Cell<u64> = const { Cell::new(0) };
}

/// The group of this thread for the filesystem holding `dir`.
pub(crate) fn group_for(dir: &Path) -> std::io::Result<Rc<SyncGroup>> {
    let dev = std::fs::metadata(dir)?.dev();
    if let Some(g) = GROUPS.with_borrow(|m| m.get(&dev).cloned()) {
        return Ok(g);
    }
    let group = Rc::new(SyncGroup {
        fd: Arc::new(File::open(dir)?),
        started: Cell::new(0),
        finished: Cell::new(0),
        failed: RefCell::new(None),
        done: Notify::default(),
    });
    GROUPS.with_borrow_mut(|m| m.insert(dev, group.clone()));
    Ok(group)
}

/// How many `syncfs` calls this thread has made.
pub fn filesystem_syncs() -> u64 {
    SYNCS.get()
}

impl SyncGroup {
    /// Returns once a `syncfs` that started after this call has finished.
    pub(crate) async fn sync(self: &Rc<Self>) -> std::io::Result<()> {
        let need = self.started.get() + 1;
        loop {
            if self.finished.get() >= need {
                return match &*self.failed.borrow() {
                    Some((at, kind, why)) if *at >= need => Err(std::io::Error::new(*kind, why.clone())),
                    _ => Ok(()),
                };
            }
            let done = self.done.listen();
            if self.started.get() == self.finished.get() {
                self.start();
            }
            done.await;
        }
    }

    /// Starts the next sync in a task of its own, so that a commit dropped while it waits does
    /// not leave the group with a sync that never finishes.
    fn start(self: &Rc<Self>) {
        let this = self.started.get() + 1;
        self.started.set(this);
        SYNCS.set(SYNCS.get() + 1);
        let group = self.clone();
        glommio::spawn_local(async move {
            let fd = group.fd.clone();
            let result = glommio::executor()
                .spawn_blocking(move || rustix::fs::syncfs(&*fd).and_then(|()| rustix::fs::fdatasync(&*fd)))
                .await;
            if let Err(e) = result {
                let e = std::io::Error::from(e);
                *group.failed.borrow_mut() = Some((this, e.kind(), format!("syncfs: {e}")));
            }
            group.finished.set(this);
            group.done.notify_all();
        })
        .detach();
    }
}
