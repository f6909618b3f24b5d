//! A sample VMOD: `hello.hello(name)` and a `hello.greeter` object.

wit_bindgen::generate!({
    world: "vmod:hello/vmod-hello",
    // The shellac:vmod package first (it is a dependency), this VMOD's own
    // WIT last.
    path: ["../../wit", "wit"],
    generate_all,
});

use exports::vmod::hello::hello::{Guest, GuestGreeter};

struct Component;

shellac_vmod_sdk::lifecycle!(Component);
export!(Component);

impl Guest for Component {
    type Greeter = Greeter;

    fn hello(name: String) -> String {
        format!("Hello, {name}!")
    }

    /// ASCII only, as `std.tolower` (C's tolower): other bytes stay.
    /// In place: the argument's buffer is the result, no allocation.
    fn lower(mut s: String) -> String {
        s.make_ascii_lowercase();
        s
    }
}

/// Built in `vcl_init` (its memory is permanent), read by every task.
struct Greeter {
    greeting: String,
}

impl GuestGreeter for Greeter {
    fn new(greeting: String) -> Self {
        Greeter { greeting }
    }

    fn greet(&self, name: String) -> String {
        format!("{}, {name}!", self.greeting)
    }
}
