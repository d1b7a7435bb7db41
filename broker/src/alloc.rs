//! The broker's global allocator: the system allocator, except that a single allocation of
//! `RESERVE_BYTES_MIN` or more is an anonymous `mmap` with `MAP_NORESERVE`.
//!
//! Why: kafka-protocol 0.18 decodes an array with `Vec::with_capacity(n)`, `n` straight from the
//! wire, before it has read a single element. An 18-byte Metadata v0 request that declares
//! 2^31 - 1 topics asks for 154 GB at once. The system allocator refuses (the kernel's
//! heuristic overcommit rejects a mapping larger than RAM plus swap), and a failed allocation
//! aborts the whole process (`handle_alloc_error`): no `catch_unwind` can stop it. Served here,
//! the same request only reserves address space: the kernel backs a page when it is first
//! touched, decoding fails on the missing elements after touching at most what the frame
//! holds, and the mapping is unmapped when the `Vec` drops. The same holds for every nested
//! array, whatever its element type.
//!
//! Nothing legitimate asks for this much at once: a request frame is at most
//! `request_bytes_max` (100 MiB by default, 1 GiB at most), and storage buffers are a few MiB.
//! An allocation that does reach the threshold still works: the mapping is ordinary memory.
//!
//! Limits: with `vm.overcommit_memory = 2` (strict accounting) the kernel ignores
//! `MAP_NORESERVE`, and under an address-space rlimit (`ulimit -v`) the reservation fails too;
//! then a hostile count aborts the broker as before. The binary warns at start-up in the first
//! case (`overcommit_is_strict`).
//!
//! This is the only module of the workspace with `unsafe` code (iouring-storage's tidy test
//! keeps an allowlist).

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Allocations of at least this many bytes are reservations (`mmap` with `MAP_NORESERVE`).
/// Far above anything legitimate (see the module doc), far below what a hostile array count
/// asks for (2^31 elements of at least 8 bytes).
pub const RESERVE_BYTES_MIN: usize = 1 << 30;

/// Every page size Linux uses is a multiple of this, so a fresh mapping is aligned to it.
const PAGE_ALIGN_MIN: usize = 4096;

/// The system allocator, with huge allocations served as lazily backed reservations.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReservingAllocator;

/// Whether `layout` is served by `mmap` rather than the system allocator. A pure function of
/// the layout, so `dealloc` (which gets the layout `alloc` got) frees with the right one.
fn is_reservation(layout: Layout) -> bool {
    layout.size() >= RESERVE_BYTES_MIN && layout.align() <= PAGE_ALIGN_MIN
}

/// Maps `size` bytes of fresh, zeroed, lazily backed memory; null on failure, as `GlobalAlloc`
/// requires.
fn reserve(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address the kernel picks touches no existing
    // memory; the arguments are valid for any `size`, and failure is reported as MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Unmaps a reservation.
///
/// # Safety
/// `p` and `size` must be a live mapping made by `reserve` or `grow` (same size), and nothing
/// may use it afterwards.
unsafe fn release(p: *mut u8, size: usize) {
    // SAFETY: the caller guarantees `p..p + size` is exactly one of our mappings, unused from now.
    let rc = unsafe { libc::munmap(p.cast(), size) };
    // munmap fails only on arguments that are not a mapping: our bookkeeping is broken, and an
    // allocator must not unwind, so stop here.
    if rc != 0 {
        std::process::abort();
    }
}

// SAFETY: every method meets the GlobalAlloc contract. Small or over-aligned layouts go to
// `System` unchanged. A reservation is a fresh page-aligned mapping (so aligned for any layout
// `is_reservation` accepts), of at least `layout.size()` bytes, zeroed, and freed only through
// `release` with the size it was made with, because `dealloc` and `realloc` receive the layout
// the block was allocated with and `is_reservation` depends on the layout alone. Nothing here
// unwinds: failures return null, or abort in `release`.
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_reservation(layout) {
            reserve(layout.size())
        } else {
            // SAFETY: the caller's guarantees on `layout` (non-zero size) pass through unchanged.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_reservation(layout) {
            // A fresh anonymous mapping reads as zeros.
            reserve(layout.size())
        } else {
            // SAFETY: as in `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if is_reservation(layout) {
            // SAFETY: the caller passes a block we allocated with this layout, so a mapping of
            // exactly `layout.size()` bytes, and does not use it again.
            unsafe { release(p, layout.size()) }
        } else {
            // SAFETY: the same layout went to `System.alloc`, which made this block.
            unsafe { System.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to `layout.align()`, does not
        // overflow `isize`; the alignment is the valid one of `layout`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_reservation(layout), is_reservation(new_layout)) {
            // SAFETY: a `System` block stays with `System`; the caller's guarantees pass through.
            (false, false) => unsafe { System.realloc(p, layout, new_size) },
            (true, true) => {
                // SAFETY: `p` is one of our mappings of `layout.size()` bytes; MREMAP_MAYMOVE lets
                // the kernel move it, keeping its contents and its MAP_NORESERVE nature. On
                // failure the old mapping is untouched, as `realloc` requires.
                let q = unsafe { libc::mremap(p.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE) };
                if q == libc::MAP_FAILED {
                    ptr::null_mut()
                } else {
                    q.cast()
                }
            }
            // Crossing the threshold either way: allocate on the other side, copy, free.
            _ => {
                // SAFETY: `new_layout` has a non-zero size (the caller guarantees `new_size > 0`).
                let q = unsafe { self.alloc(new_layout) };
                if !q.is_null() {
                    // SAFETY: both blocks are live, distinct, and at least this long.
                    unsafe { ptr::copy_nonoverlapping(p, q, layout.size().min(new_size)) };
                    // SAFETY: `p` was allocated with `layout` and is not used after this.
                    unsafe { self.dealloc(p, layout) };
                }
                q
            }
        }
    }
}

/// Whether the kernel does strict overcommit accounting (`vm.overcommit_memory = 2`), which
/// ignores `MAP_NORESERVE` and so disarms this allocator's defence.
pub fn overcommit_is_strict() -> bool {
    std::fs::read_to_string("/proc/sys/vm/overcommit_memory").is_ok_and(|s| s.trim() == "2")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: usize = 1 << 30;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn only_huge_page_aligned_layouts_are_reservations() {
        assert!(!is_reservation(layout(RESERVE_BYTES_MIN - 1)));
        assert!(is_reservation(layout(RESERVE_BYTES_MIN)));
        assert!(is_reservation(Layout::from_size_align(RESERVE_BYTES_MIN, 4096).unwrap()));
        assert!(!is_reservation(Layout::from_size_align(RESERVE_BYTES_MIN, 8192).unwrap()));
    }

    #[test]
    fn a_reservation_far_beyond_memory_succeeds_and_is_zeroed() {
        // 1 TiB: far more than RAM plus swap on any machine this runs on, so the system
        // allocator would fail here (and abort the process through handle_alloc_error).
        let big = layout(1 << 40);
        let a = ReservingAllocator;
        // SAFETY: a non-zero-size layout; the block is freed with the same layout.
        unsafe {
            let p = a.alloc_zeroed(big);
            assert!(!p.is_null(), "a 1 TiB MAP_NORESERVE reservation failed (vm.overcommit_memory = 2?)");
            assert_eq!(*p, 0);
            assert_eq!(*p.add(big.size() - 1), 0);
            *p.add(12345) = 7;
            assert_eq!(*p.add(12345), 7);
            a.dealloc(p, big);
        }
    }

    #[test]
    fn realloc_keeps_contents_across_the_threshold_both_ways() {
        let a = ReservingAllocator;
        let small = layout(4096);
        // SAFETY: every block is used within its size and freed once, with its current layout.
        unsafe {
            let p = a.alloc(small);
            assert!(!p.is_null());
            for i in 0..4096 {
                *p.add(i) = (i % 251) as u8;
            }
            // Up: System -> mapping.
            let q = a.realloc(p, small, 2 * GIB);
            assert!(!q.is_null());
            *q.add(2 * GIB - 1) = 9;
            // Mapping -> bigger mapping (mremap).
            let r = a.realloc(q, layout(2 * GIB), 3 * GIB);
            assert!(!r.is_null());
            assert_eq!(*r.add(2 * GIB - 1), 9);
            assert_eq!(*r.add(3 * GIB - 1), 0, "grown part reads as zeros");
            // Down: mapping -> System.
            let s = a.realloc(r, layout(3 * GIB), 4096);
            assert!(!s.is_null());
            for i in 0..4096 {
                assert_eq!(*s.add(i), (i % 251) as u8, "byte {i}");
            }
            a.dealloc(s, small);
        }
    }

    #[test]
    fn small_allocations_go_to_the_system_allocator() {
        let a = ReservingAllocator;
        let l = layout(100);
        // SAFETY: as above.
        unsafe {
            let p = a.alloc_zeroed(l);
            assert!(!p.is_null());
            assert!((0..100).all(|i| *p.add(i) == 0));
            a.dealloc(p, l);
        }
    }
}
