# For tests/tools/log-shapes.sh: the VCL features whose log records the
# sample VCL does not reach (ESI, do_gzip, uncacheable, keep, synth, pipe, a
# backend that refuses connections, restart, hit-for-pass).
vcl 4.1;
backend d { .host = "127.0.0.1"; .port = "18180"; }
backend down { .host = "127.0.0.1"; .port = "9"; } # down: nothing listens

sub vcl_recv {
    if (req.url ~ "^/synth") { return (synth(404)); }
    if (req.method == "FOO") { return (pipe); }
    if (req.url ~ "^/down") { set req.backend_hint = down; }
    if (req.url ~ "^/restart" && req.restarts == 0) {
        set req.url = "/bytes/5";
        return (restart);
    }
}
sub vcl_backend_response {
    if (bereq.url ~ "^/esi/") { set beresp.do_esi = true; }
    if (bereq.url ~ "^/bytes/9") { set beresp.do_gzip = true; }
    if (bereq.url ~ "unc") { set beresp.uncacheable = true; }
    if (bereq.url ~ "keep") { set beresp.keep = 10s; }
    if (bereq.url ~ "hfp") { return (pass(10s)); }
}
