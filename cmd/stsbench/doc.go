// Command stsbench is a closed-loop load generator for the STS token endpoint
// (POST /token, RFC 8693) over HTTPS keep-alive connections.
//
// It mints --tokens distinct upstream subject tokens (distinct `sub` suffixes and
// `jti`s, valid for an hour; service-account subjects also get a realistic
// `kubernetes.io` claim) with the private key of an upstream the STS trusts, then
// runs --concurrency workers, each on its own HTTP/1.1 keep-alive connection, sending
// exchanges back to back: first for --warmup (not recorded), then for --duration. Every
// response is checked (200, JSON, non-empty access_token, expires_in > 0); anything
// else is counted as an error by kind. Tokens are never printed.
//
// Against the quickstart (`go run ./cmd/sts quickstart`, which serves on
// https://127.0.0.1:8443 with its files in ./sts-quickstart):
//
//	go run ./cmd/stsbench --quickstart sts-quickstart --pid "$(pgrep -n -x sts)"
//
// Against any STS on this machine:
//
//	stsbench --sts https://127.0.0.1:8443 --cacert ca.crt \
//	    --upstream-key upstream.pem --upstream-issuer https://issuer.example \
//	    [--kid KID] [--upstream-audience sts] [--subject-prefix system:serviceaccount:demo:bench-] \
//	    [--audience https://api.demo.internal] [--scope api.read] \
//	    [--tokens 1000] [--concurrency 8] [--duration 10s] [--warmup 1s] \
//	    [--max-requests 5000000] [--pid PID] [--allow-remote] [--json]
//
// It reports successful exchanges, errors by kind, throughput, the latency
// percentiles of successful exchanges, its own CPU time and, with --pid, the STS
// process's CPU time over the measured window (from /proc/PID/stat) per exchange.
//
// Safety: it only sends to the given URL, and only to loopback addresses
// (127.0.0.0/8, ::1; checked on the URL and again on every dial) unless
// --allow-remote is given. The run is bounded in time (--warmup + --duration, each
// request by a 10 s timeout) and in count (--max-requests per phase).
//
// Exit status: 0 when every request succeeded, 1 on failure or when any request
// failed (the report is printed first), 2 on a usage error.
package main
