# The ESI/gzip benchmark's configuration, for varnishd and Shellac alike.
vcl 4.1;

backend default {
    .host = "127.0.0.1";
    .port = "8090";
}

sub vcl_backend_response {
    if (bereq.url ~ "^/esi/page/") {
        set beresp.do_esi = true;
    }
    if (bereq.url ~ "^/esi/gzpage/") {
        set beresp.do_esi = true;
        set beresp.do_gzip = true;
    }
}
