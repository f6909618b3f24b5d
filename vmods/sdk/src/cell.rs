//! [`TaskLocal`] (Varnish's `PRIV_TASK`) and [`InitOnly`] (state that
//! `vcl_init` builds and tasks only read).

use crate::rt;
use core::cell::{Cell, Ref, RefCell, UnsafeCell};

/// A value that lives for one task: set it during a task, read it in later
/// calls of the same task; at `end-task` it is gone. Varnish's
/// `PRIV_TASK`: vmod_cookie's parsed cookies, vmod_var's variables.
///
/// ```ignore
/// static COOKIES: TaskLocal<Vec<(String, String)>> = TaskLocal::new();
/// COOKIES.with_default(|jar| jar.push((name, value)));
/// ```
///
/// A stale value (of a task that ended) is forgotten, never dropped: its
/// memory was the arena's and has been reused. So `T`'s `Drop` does not run
/// at the end of a task; keep nothing in it that needs one.
///
/// Nesting `with` calls on the same `TaskLocal` traps.
pub struct TaskLocal<T> {
    generation: Cell<u64>,
    busy: Cell<bool>,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: a VMOD instance is single-threaded (see `rt`); off wasm32 the
// SDK is only built for unit tests of pure logic, which use no TaskLocal.
unsafe impl<T> Sync for TaskLocal<T> {}

impl<T> TaskLocal<T> {
    /// An empty task-local, for a `static`.
    pub const fn new() -> Self {
        TaskLocal {
            generation: Cell::new(0),
            busy: Cell::new(false),
            value: UnsafeCell::new(None),
        }
    }

    /// Runs `f` on this task's value (`None` until set in this task).
    pub fn with<R>(&self, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        if self.busy.replace(true) {
            reentered();
        }
        let slot = self.value.get();
        let now = rt::generation();
        if self.generation.get() != now {
            // SAFETY: not borrowed (busy was false); the old value is
            // overwritten without being dropped, on purpose.
            unsafe { core::ptr::write(slot, None) };
            self.generation.set(now);
        }
        // SAFETY: exclusive while busy.
        let r = f(unsafe { &mut *slot });
        self.busy.set(false);
        r
    }

    /// Runs `f` on this task's value, creating it with `init` if unset.
    pub fn with_or<R>(&self, init: impl FnOnce() -> T, f: impl FnOnce(&mut T) -> R) -> R {
        self.with(|v| f(v.get_or_insert_with(init)))
    }

    /// Sets this task's value.
    pub fn set(&self, value: T) {
        self.with(|v| *v = Some(value));
    }

    /// Takes this task's value out, leaving it unset.
    pub fn take(&self) -> Option<T> {
        self.with(Option::take)
    }

    /// Unsets this task's value.
    pub fn clear(&self) {
        self.with(|v| *v = None);
    }

    /// Whether this task has set a value.
    pub fn is_set(&self) -> bool {
        self.with(|v| v.is_some())
    }
}

impl<T: Default> TaskLocal<T> {
    /// Runs `f` on this task's value, creating the default if unset.
    pub fn with_default<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.with_or(T::default, f)
    }
}

impl<T: Clone> TaskLocal<T> {
    /// A copy of this task's value.
    pub fn get(&self) -> Option<T> {
        self.with(|v| v.clone())
    }
}

impl<T> Default for TaskLocal<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cold]
fn reentered() -> ! {
    panic!("TaskLocal::with called again from inside its own closure")
}

/// State that may change only before `warm` (in `load` and `vcl_init`) and
/// is read-only afterwards: the image every task starts from. Use it in a
/// VCL object whose methods configure it in `vcl_init` (`qf.add_glob(…)`),
/// or in a `static` filled at `load`.
///
/// After `warm`, [`modify`](InitOnly::modify) returns an error (so a VCL
/// method meant for `vcl_init` fails the task instead of writing memory the
/// arena will reclaim).
pub struct InitOnly<T> {
    cell: RefCell<T>,
}

// SAFETY: single-threaded guest; see TaskLocal.
unsafe impl<T> Sync for InitOnly<T> {}

impl<T> InitOnly<T> {
    /// Wraps a value.
    pub const fn new(value: T) -> Self {
        InitOnly {
            cell: RefCell::new(value),
        }
    }

    /// Reads the value.
    pub fn get(&self) -> Ref<'_, T> {
        self.cell.borrow()
    }

    /// Changes the value, if `vcl_init` (or `load`) is still running.
    pub fn modify<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, String> {
        if rt::is_warm() {
            return Err("may only be called in vcl_init".into());
        }
        Ok(f(&mut self.cell.borrow_mut()))
    }
}

impl<T: Default> Default for InitOnly<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}
