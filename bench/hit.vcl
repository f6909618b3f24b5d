# The cache-hit benchmark's configuration, for varnishd and Shellac alike.
vcl 4.1;

backend default {
    .host = "127.0.0.1";
    .port = "8090";
}
