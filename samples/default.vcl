# Shellac's sample configuration: a cache in front of one origin.
#
# It is plain Varnish 7.1 VCL; anything not decided here falls through to the
# builtin VCL, exactly as in Varnish.
vcl 4.1;

import std;

backend default {
    .host = "127.0.0.1";
    .port = "8080";
    .connect_timeout = 1s;
    .first_byte_timeout = 10s;
    .probe = {
        .url = "/";
        .interval = 2s;
        .timeout = 1s;
        .window = 5;
        .threshold = 3;
    }
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        return (purge);
    }
    # Strip tracking parameters so they do not fragment the cache.
    set req.url = regsuball(req.url, "([?&])(utm_[a-z]+|fbclid|gclid)=[^&]*&?", "\1");
    set req.url = regsub(req.url, "[?&]$", "");
    set req.url = std.querysort(req.url);
    if (req.url ~ "^/static/") {
        unset req.http.Cookie;
    }
}

sub vcl_backend_response {
    # Keep objects a while past their TTL, to serve while the origin is sick.
    set beresp.grace = 1h;
    if (bereq.url ~ "^/static/") {
        set beresp.ttl = 1d;
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
