//! varnish-modules' vmod_xkey as a Shellac component. The host indexes
//! cached objects by their `xkey` / `X-HashTwo` response headers; purging
//! is `cache.purge-tags`.

wit_bindgen::generate!({
    world: "vmod:xkey/vmod-xkey",
    path: ["../../wit", "wit"],
    generate_all,
});

use exports::vmod::xkey::xkey::Guest;
use shellac::vmod::cache;

struct Component;
shellac_vmod_sdk::lifecycle!(Component);
export!(Component);

fn purge(keys: &str, soft: bool) -> i64 {
    let tags: Vec<String> = shellac_vmod_sdk::split_list(keys)
        .map(str::to_string)
        .collect();
    if tags.is_empty() {
        return 0;
    }
    i64::from(cache::purge_tags(&tags, soft))
}

impl Guest for Component {
    fn purge(keys: String) -> i64 {
        purge(&keys, false)
    }

    fn softpurge(keys: String) -> i64 {
        purge(&keys, true)
    }
}
