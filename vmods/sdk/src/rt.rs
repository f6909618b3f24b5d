//! The lifecycle state behind [`lifecycle!`](crate::lifecycle): whether the
//! instance is warm, and the task generation that [`TaskLocal`](crate::TaskLocal)
//! values are checked against.
//!
//! A wasm32 guest without the `atomics` feature is single-threaded: these
//! plain statics are only ever touched by the one thread of the instance.

use crate::{arena, Event};
use core::cell::Cell;

struct State {
    warm: Cell<bool>,
    generation: Cell<u64>,
}

// SAFETY: a VMOD instance has one thread; see the module docs.
unsafe impl Sync for State {}

#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
compile_error!("shellac-vmod-sdk assumes single-threaded wasm32 guests");

static STATE: State = State {
    warm: Cell::new(false),
    generation: Cell::new(1),
};

/// Whether `warm` has been seen: `vcl_init` is over, tasks are running, and
/// [`InitOnly`](crate::InitOnly) values are frozen.
pub fn is_warm() -> bool {
    STATE.warm.get()
}

/// The current task generation; it changes at every `end-task` (and at
/// `warm`), which is how task-local values learn they are stale.
pub fn generation() -> u64 {
    STATE.generation.get()
}

fn next_generation() {
    STATE.generation.set(STATE.generation.get().wrapping_add(1));
}

/// The hook of [`lifecycle!`](crate::lifecycle) without one.
pub fn no_hook(_: Event) -> Result<(), String> {
    Ok(())
}

/// `on-event`: the SDK's handling plus the VMOD's hook.
pub fn on_event(ev: Event, hook: fn(Event) -> Result<(), String>) -> Result<(), String> {
    match ev {
        Event::Warm => {
            hook(ev)?;
            // Task-local values set during vcl_init are not seen by tasks
            // (their memory stays below the floor, as vcl_init's workspace).
            next_generation();
            if !STATE.warm.replace(true) {
                arena::set_floor();
            } else {
                arena::reset();
            }
            Ok(())
        }
        Event::Load | Event::Cold | Event::Discard => hook(ev),
    }
}

/// `end-task`: forget task state, reset the arena to the floor.
pub fn end_task() {
    next_generation();
    if STATE.warm.get() {
        arena::reset();
    }
}
