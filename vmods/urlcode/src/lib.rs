//! vmod_urlcode as a Shellac component.

wit_bindgen::generate!({
    world: "vmod:urlcode/vmod-urlcode",
    path: ["../../wit", "wit"],
    generate_all,
});

mod logic;

use exports::vmod::urlcode::urlcode::Guest;

struct Component;
shellac_vmod_sdk::lifecycle!(Component);
export!(Component);

impl Guest for Component {
    fn encode(input: String) -> String {
        logic::encode(input.as_bytes())
    }

    fn decode(input: String) -> Option<String> {
        logic::decode(&input).map(|b| match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}
