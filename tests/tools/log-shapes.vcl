# For tests/tools/log-shapes.sh: the VCL features whose log records the
# sample VCL does not reach (ESI, do_gzip, uncacheable, keep, synth, pipe, a
# backend that refuses connections, restart, hit-for-pass, retry,
# grace and a background fetch, std.log, a cached request body).
vcl 4.1;
import std;
backend d { .host = "127.0.0.1"; .port = "18180"; }
backend down { .host = "127.0.0.1"; .port = "9"; } # down: nothing listens

sub vcl_recv {
    if (req.url ~ "^/synth") { return (synth(404)); }
    if (req.method == "FOO") { return (pipe); }
    if (req.url ~ "^/down") { set req.backend_hint = down; }
    if (req.url ~ "^/log") { std.log("hello from VCL"); }
    if (req.url ~ "^/cached-body") {
        std.cache_req_body(10KB);
        return (pass);
    }
    if (req.url ~ "^/restart" && req.restarts == 0) {
        set req.url = "/bytes/5";
        return (restart);
    }
}
sub vcl_backend_response {
    if (bereq.url ~ "^/esi/") { set beresp.do_esi = true; }
    if (bereq.url ~ "^/esi/gzpage") { set beresp.do_gzip = true; }
    if (bereq.url ~ "grace") {
        set beresp.ttl = 1s;
        set beresp.grace = 10s;
    }
    if (bereq.url ~ "^/bytes/9") { set beresp.do_gzip = true; }
    if (bereq.url ~ "unc") { set beresp.uncacheable = true; }
    if (bereq.url ~ "keep") { set beresp.keep = 10s; }
    if (bereq.url ~ "hfp") { return (pass(10s)); }
}
sub vcl_backend_error {
    if (bereq.url ~ "^/down" && bereq.retries == 0) { return (retry); }
}
