-- A browser-like request for the VCL-heavy scenario (bench/bench.vcl,
-- /heavy/): tracking parameters, cookies, Accept-Language, a user agent.
wrk.method = "GET"
wrk.path = "/heavy/bytes/1024?utm_source=news&utm_medium=mail&id=42&fbclid=abc"
wrk.headers["Host"] = "www.example.com:80"
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"
wrk.headers["Accept"] = "text/html,application/xhtml+xml"
wrk.headers["Accept-Language"] = "en-GB,en;q=0.9"
wrk.headers["Cookie"] = "session=abc123; _ga=GA1.2.3.4; lang=en; tracking=xyz"
