# The configuration of bench/run, for varnishd and Shellac alike. Each
# scenario has its own URL prefix; everything else is a plain cache.
vcl 4.1;

import std;
import cookie;

backend default {
    .host = "127.0.0.1";
    .port = "8090";
}

acl internal {
    "127.0.0.1";
    "10.0.0.0"/8;
    "192.168.0.0"/16;
    !"192.168.1.1";
}

sub vcl_recv {
    if (req.url ~ "^/pass/") {
        set req.url = regsub(req.url, "^/pass", "");
        return (pass);
    }
    if (req.url ~ "^/heavy/") {
        # A typical production vcl_recv: URL and cookie normalisation,
        # an ACL, header edits and a bundled VMOD.
        set req.url = regsub(req.url, "^/heavy", "");
        set req.url = regsuball(req.url, "(\?|&)(utm_[a-z]+|fbclid|gclid)=[^&]*", "\1");
        set req.url = regsub(req.url, "(\?|&)+$", "");
        set req.url = regsub(req.url, "\?&", "?");
        set req.http.host = regsub(std.tolower(req.http.host), ":[0-9]+$", "");
        if (req.http.Accept-Language ~ "^[a-z][a-z]") {
            set req.http.x-lang = regsub(req.http.Accept-Language, "^([a-z][a-z]).*$", "\1");
        } else {
            set req.http.x-lang = "en";
        }
        if (client.ip ~ internal) {
            set req.http.x-internal = "1";
        } else {
            unset req.http.x-internal;
        }
        cookie.parse(req.http.Cookie);
        cookie.keep("session,lang");
        set req.http.Cookie = cookie.get_string();
        if (req.http.Cookie == "") {
            unset req.http.Cookie;
        }
        unset req.http.Cookie;
        set req.http.x-device = "desktop";
        if (req.http.User-Agent ~ "(?i)(mobile|android|iphone)") {
            set req.http.x-device = "mobile";
        }
        return (hash);
    }
}

sub vcl_hash {
    if (req.http.x-lang) {
        hash_data(req.http.x-lang);
    }
}

sub vcl_deliver {
    if (req.http.x-device) {
        set resp.http.x-device = req.http.x-device;
        set resp.http.x-cache = "HIT";
        unset resp.http.x-origin-count;
        unset resp.http.Via;
    }
}
