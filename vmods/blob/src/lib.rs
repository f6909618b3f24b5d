//! vmod_blob (Varnish 7.1) as a Shellac component.

wit_bindgen::generate!({
    world: "vmod:blob/vmod-blob",
    path: ["../../wit", "wit"],
    generate_all,
});

mod codec;

use codec::Scheme;
use exports::vmod::blob::blob::{Encoding, Guest, GuestBlob, LetterCase};
use shellac::vmod::types::Bytes;

struct Component;
shellac_vmod_sdk::lifecycle!(Component);
export!(Component);

fn scheme(e: Option<Encoding>) -> Scheme {
    match e.unwrap_or(Encoding::Identity) {
        Encoding::Identity => Scheme::Identity,
        Encoding::Base64 => Scheme::Base64,
        Encoding::Base64url => Scheme::Base64Url,
        Encoding::Base64urlnopad => Scheme::Base64UrlNoPad,
        Encoding::Base64cf => Scheme::Base64Cf,
        Encoding::Hex => Scheme::Hex,
        Encoding::Url => Scheme::Url,
    }
}

/// Whether upper-case hex digits were asked for; refuses a case other than
/// DEFAULT where the scheme has no hex digits, as vmod_blob does.
fn upper(s: Scheme, c: Option<LetterCase>) -> Result<bool, String> {
    let c = c.unwrap_or(LetterCase::Default);
    match (s, c) {
        (_, LetterCase::Default) => Ok(false),
        (Scheme::Hex | Scheme::Url, c) => Ok(matches!(c, LetterCase::Upper)),
        (s, _) => Err(format!(
            "vmod blob error: case {} is illegal with encoding {}",
            if matches!(c, LetterCase::Upper) {
                "UPPER"
            } else {
                "LOWER"
            },
            s.name()
        )),
    }
}

fn decode(
    decoding: Option<Encoding>,
    length: Option<i64>,
    encoded: &str,
) -> Result<Vec<u8>, String> {
    let s = scheme(decoding);
    let text = match length.unwrap_or(0) {
        n if n > 0 && (n as u64) < encoded.len() as u64 => {
            let mut end = n as usize;
            while !encoded.is_char_boundary(end) {
                end -= 1;
            }
            &encoded[..end]
        }
        _ => encoded,
    };
    codec::decode(s, text)
        .map_err(|e| format!("vmod blob error: cannot decode, {e} in {}", s.name()))
}

fn encode(
    encoding: Option<Encoding>,
    case: Option<LetterCase>,
    blob: &[u8],
) -> Result<String, String> {
    let s = scheme(encoding);
    let up = upper(s, case)?;
    codec::encode(s, up, blob).map_err(|e| format!("vmod blob error: cannot encode, {e}"))
}

impl Guest for Component {
    type Blob = Blob;

    fn decode(
        decoding: Option<Encoding>,
        length: Option<i64>,
        encoded: String,
    ) -> Result<Vec<u8>, String> {
        decode(decoding, length, &encoded)
    }

    fn encode(
        encoding: Option<Encoding>,
        case: Option<LetterCase>,
        blob: Vec<u8>,
    ) -> Result<String, String> {
        encode(encoding, case, &blob)
    }

    fn transcode(
        decoding: Option<Encoding>,
        encoding: Option<Encoding>,
        case: Option<LetterCase>,
        length: Option<i64>,
        encoded: String,
    ) -> Result<String, String> {
        let b = decode(decoding, length, &encoded)?;
        encode(encoding, case, &b)
    }

    fn same(a: Vec<u8>, b: Vec<u8>) -> bool {
        a == b
    }

    fn equal(a: Vec<u8>, b: Vec<u8>) -> bool {
        a == b
    }

    fn length(blob: Vec<u8>) -> i64 {
        blob.len() as i64
    }

    fn sub(blob: Vec<u8>, length: Bytes, offset: Option<Bytes>) -> Result<Vec<u8>, String> {
        let off = offset.map_or(0, |o| o.count);
        let end = off.checked_add(length.count);
        match end {
            Some(end) if end <= blob.len() as u64 => Ok(blob[off as usize..end as usize].to_vec()),
            _ => Err(format!(
                "vmod blob error: size {} from offset {} requires more bytes than blob length {}",
                length.count,
                off,
                blob.len()
            )),
        }
    }
}

/// `new b = blob.blob(…)`: the decoded BLOB, built in vcl_init.
struct Blob {
    bytes: Vec<u8>,
}

impl GuestBlob for Blob {
    fn new(decoding: Option<Encoding>, encoded: String) -> Self {
        // A constructor cannot fail in WIT: a bad encoding leaves an empty
        // BLOB and an error record (vcl_init goes on, as with a NULL blob).
        let bytes = decode(decoding, None, &encoded).unwrap_or_else(|e| {
            shellac::vmod::host::error(&e);
            Vec::new()
        });
        Blob { bytes }
    }

    fn get(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    fn encode(
        &self,
        encoding: Option<Encoding>,
        case: Option<LetterCase>,
    ) -> Result<String, String> {
        encode(encoding, case, &self.bytes)
    }
}
