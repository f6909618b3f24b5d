//! varnish-modules' vmod_var as a Shellac component: task variables in a
//! `TaskLocal` (PRIV_TASK), global variables in the host's `shared` state.

wit_bindgen::generate!({
    world: "vmod:var/vmod-var",
    path: ["../../wit", "wit"],
    generate_all,
});

use exports::vmod::var::var::Guest;
use shellac::vmod::shared;
use shellac::vmod::types::{Backend, Duration, Ip};
use shellac_vmod_sdk::TaskLocal;

struct Component;
shellac_vmod_sdk::lifecycle!(Component);
export!(Component);

enum Value {
    Str(String),
    Int(i64),
    Real(f64),
    Duration(f64),
    Ip(Ip),
    Backend(String),
}

/// The task's variables (few: a list beats a map).
static VARS: TaskLocal<Vec<(String, Value)>> = TaskLocal::new();

fn set(key: String, value: Value) {
    VARS.with_default(|vars| match vars.iter_mut().find(|(k, _)| *k == key) {
        Some((_, v)) => *v = value,
        None => vars.push((key, value)),
    });
}

fn get<R>(key: &str, f: impl FnOnce(Option<&Value>) -> R) -> R {
    VARS.with_default(|vars| f(vars.iter().find(|(k, _)| k == key).map(|(_, v)| v)))
}

impl Guest for Component {
    fn set(key: String, value: String) {
        set(key, Value::Str(value));
    }

    fn get(key: String) -> Option<String> {
        get(&key, |v| match v {
            None => None,
            Some(Value::Str(s)) => Some(s.clone()),
            Some(_) => Some(String::new()),
        })
    }

    fn global_set(key: String, value: String) {
        shared::set(&key, &value, None);
    }

    fn global_get(key: String) -> Option<String> {
        shared::get(&key)
    }

    fn set_int(key: String, value: i64) {
        set(key, Value::Int(value));
    }

    fn get_int(key: String) -> i64 {
        get(&key, |v| match v {
            Some(Value::Int(n)) => *n,
            _ => 0,
        })
    }

    fn set_string(key: String, value: String) {
        Self::set(key, value);
    }

    fn get_string(key: String) -> Option<String> {
        Self::get(key)
    }

    fn set_real(key: String, value: f64) {
        set(key, Value::Real(value));
    }

    fn get_real(key: String) -> f64 {
        get(&key, |v| match v {
            Some(Value::Real(x)) => *x,
            _ => 0.0,
        })
    }

    fn set_duration(key: String, value: Duration) {
        set(key, Value::Duration(value.seconds));
    }

    fn get_duration(key: String) -> Duration {
        let seconds = get(&key, |v| match v {
            Some(Value::Duration(x)) => *x,
            _ => 0.0,
        });
        Duration { seconds }
    }

    fn set_ip(key: String, value: Ip) {
        set(key, Value::Ip(value));
    }

    fn get_ip(key: String) -> Option<Ip> {
        get(&key, |v| match v {
            Some(Value::Ip(ip)) => Some(ip.clone()),
            _ => None,
        })
    }

    fn set_backend(key: String, value: Backend) {
        set(key, Value::Backend(value.name));
    }

    fn get_backend(key: String) -> Option<Backend> {
        get(&key, |v| match v {
            Some(Value::Backend(name)) => Some(Backend { name: name.clone() }),
            _ => None,
        })
    }

    fn clear() {
        VARS.clear();
    }
}
