// Command stsbench is a load generator for the STS token endpoint (POST /token,
// RFC 8693) over HTTPS keep-alive connections, closed-loop by default, open-loop
// with --rate.
//
// It mints --tokens distinct upstream subject tokens (distinct `sub` suffixes and
// `jti`s, valid for an hour; service-account subjects also get a realistic
// `kubernetes.io` claim) with the private key of an upstream the STS trusts, then
// loads the STS first for --warmup (not recorded), then for --duration.
//
// Closed loop (default): --concurrency workers, each on its own HTTP/1.1 keep-alive
// connection, send exchanges back to back, so the offered load adapts to the
// server: it measures capacity.
//
// Open loop (--rate N): arrivals at N per second, Poisson (--arrivals poisson,
// default) or evenly spaced (--arrivals uniform), whatever the answers, are sent by
// a pool of --concurrency connections (default 256 with --rate), each carrying one
// request at a time. An arrival that finds --max-outstanding requests (default
// --concurrency) already sent or waiting is not sent and is counted as "not sent
// (client saturated)": then the STS was offered less than N, and the run says so.
// It measures behaviour under a given load, such as 3x capacity. Latencies are from
// sending a request to its whole answer; the delay between an arrival's scheduled
// time and its sending is reported apart (send delay).
//
// Every answer is checked and classified: admitted (200, JSON, non-empty
// access_token, expires_in > 0), limited (429 with Retry-After and an RFC 6749
// JSON body with error temporarily_unavailable: the STS's rate and concurrency
// limits; not an error), or an error, counted by kind (any other status, a 429
// without Retry-After or that body, a malformed 200, a transport failure). Admitted
// and limited answers have their own latency percentiles. Tokens are never printed.
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
//	    [--max-requests 5000000] [--pid PID] [--allow-remote] [--json] \
//	    [--rate N [--arrivals poisson|uniform] [--max-outstanding M]]
//
// It reports admitted exchanges, limited answers, errors by kind, throughput, the
// latency percentiles of admitted exchanges and of limited answers, in the open
// loop the arrivals scheduled, sent and not sent and the send delay, its own CPU
// time and, with --pid, the STS process's CPU time over the measured window (from
// /proc/PID/stat) per admitted exchange. scripts/overload.sh combines a closed-loop
// capacity run with an open-loop run at 3x that capacity.
//
// Safety: it only sends to the given URL, and only to loopback addresses
// (127.0.0.0/8, ::1; checked on the URL and again on every dial) unless
// --allow-remote is given. The run is bounded in time (--warmup + --duration, each
// request by a 10 s timeout), in count (--max-requests requests, or arrivals in the
// open loop, per phase) and in concurrency (--concurrency connections, at most
// --max-outstanding requests outstanding).
//
// Exit status: 0 when every request was admitted or limited and at least one was
// admitted (arrivals not sent are reported with a warning on stderr), 1 on failure
// or when any request failed (the report is printed first), 2 on a usage error.
package main
