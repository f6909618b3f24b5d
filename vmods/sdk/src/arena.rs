//! The workspace arena: a bump allocator over linear memory, installed as
//! the `#[global_allocator]` of every wasm32 guest that links this crate.
//!
//! ```text
//!  0 ... stack ... data | __heap_base ... permanent ... | floor ... task ... | cur ... | end
//! ```
//!
//! - Before `warm`, allocations are permanent: the module's `load`, the
//!   objects and state `vcl_init` built.
//! - `warm` records `cur` as the floor ([`set_floor`]).
//! - `end-task` sets `cur` back to the floor ([`reset`]): the task's
//!   strings, lists and task-local values are gone at once, as Varnish's
//!   workspace is at the end of a task. Memory pages stay (the instance is
//!   reused); nothing is zeroed.
//! - `dealloc` is a no-op, except that freeing the last allocation pops it;
//!   `realloc` of the last allocation grows or shrinks in place. Neither ever
//!   goes below the floor.
//! - When memory must grow and the host refuses (`memory.grow` fails at the
//!   instance's memory cap), the allocator traps: the task fails, the host
//!   drops the instance. It never returns null, never loops.

/// Arena figures, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Where the heap starts (`__heap_base`).
    pub base: usize,
    /// The floor recorded at `warm` (0 before).
    pub floor: usize,
    /// The next free byte.
    pub cur: usize,
    /// The end of linear memory.
    pub end: usize,
    /// The highest `cur` seen.
    pub high: usize,
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Stats;
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;

    const PAGE: usize = 65536;

    struct Arena {
        s: UnsafeCell<Stats>,
    }

    // SAFETY: single-threaded guest (see `rt`).
    unsafe impl Sync for Arena {}

    #[global_allocator]
    static ARENA: Arena = Arena {
        s: UnsafeCell::new(Stats {
            base: 0,
            floor: 0,
            cur: 0,
            end: 0,
            high: 0,
        }),
    };

    extern "C" {
        static __heap_base: u8;
    }

    #[cold]
    fn out_of_memory() -> ! {
        core::arch::wasm32::unreachable()
    }

    #[inline]
    fn state() -> &'static mut Stats {
        // SAFETY: single-threaded; no reference outlives one allocator call.
        let s = unsafe { &mut *ARENA.s.get() };
        if s.end == 0 {
            let base = core::ptr::addr_of!(__heap_base) as usize;
            s.base = base;
            s.cur = base;
            s.high = base;
            s.end = core::arch::wasm32::memory_size(0).saturating_mul(PAGE);
        }
        s
    }

    /// Makes sure memory reaches `new_end`, growing it or trapping.
    #[inline]
    fn reserve(s: &mut Stats, new_end: usize) {
        if new_end > s.end {
            let pages = (new_end - s.end).div_ceil(PAGE);
            if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                out_of_memory();
            }
            s.end = s.end.saturating_add(pages * PAGE);
        }
        s.cur = new_end;
        if new_end > s.high {
            s.high = new_end;
        }
    }

    #[inline]
    fn bump(s: &mut Stats, size: usize, align: usize) -> *mut u8 {
        let Some(start) = s.cur.checked_add(align - 1).map(|x| x & !(align - 1)) else {
            out_of_memory()
        };
        let Some(new_end) = start.checked_add(size) else {
            out_of_memory()
        };
        reserve(s, new_end);
        start as *mut u8
    }

    unsafe impl GlobalAlloc for Arena {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            bump(state(), l.size(), l.align())
        }

        unsafe fn dealloc(&self, ptr: *mut u8, l: Layout) {
            let s = state();
            let p = ptr as usize;
            if p >= s.floor && p.wrapping_add(l.size()) == s.cur {
                s.cur = p;
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
            let s = state();
            let p = ptr as usize;
            if p >= s.floor && p.wrapping_add(l.size()) == s.cur {
                let Some(new_end) = p.checked_add(new_size) else {
                    out_of_memory()
                };
                reserve(s, new_end);
                return ptr;
            }
            let new = bump(s, new_size, l.align());
            // SAFETY: distinct regions (`new` is past `cur`), both valid.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, l.size().min(new_size)) };
            new
        }
    }

    pub fn set_floor() {
        let s = state();
        s.floor = s.cur;
    }

    pub fn reset() {
        let s = state();
        if s.floor != 0 {
            s.cur = s.floor;
        }
    }

    pub fn stats() -> Stats {
        *state()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    //! Off wasm32 (unit tests of pure logic on the build machine) the
    //! system allocator stays in place and these do nothing.
    use super::Stats;
    pub fn set_floor() {}
    pub fn reset() {}
    pub fn stats() -> Stats {
        Stats::default()
    }
}

/// Records the current allocation point as the floor (at `warm`).
pub fn set_floor() {
    imp::set_floor()
}

/// Drops every allocation above the floor (at `end-task`). Does nothing
/// before a floor was recorded.
pub fn reset() {
    imp::reset()
}

/// The arena's figures now.
pub fn stats() -> Stats {
    imp::stats()
}

/// Bytes allocated by the current task (above the floor).
pub fn task_bytes() -> usize {
    let s = stats();
    s.cur
        .saturating_sub(if s.floor == 0 { s.base } else { s.floor })
}
