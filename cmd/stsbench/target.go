package main

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// checkTarget parses the STS base URL and, unless allowRemote, requires its host to
// be a loopback address (127.0.0.0/8, ::1) or "localhost". The dialer enforces the
// same on the resolved address (loopbackOnly), so a "localhost" that resolves
// elsewhere is refused too.
func checkTarget(raw string, allowRemote bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("--sts: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("--sts %q: want an https:// (or http://) URL", raw)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--sts %q: want scheme://host[:port][/path] only", raw)
	}
	if allowRemote {
		return u, nil
	}
	if h := u.Hostname(); !strings.EqualFold(h, "localhost") && !isLoopback(h) {
		return nil, fmt.Errorf("--sts %q: %s is not a loopback address; this tool only loads 127.0.0.0/8 and ::1 unless --allow-remote is given", raw, h)
	}
	return u, nil
}

// isLoopback reports whether host is a literal loopback IP address.
func isLoopback(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// loopbackOnly is a net.Dialer Control function that refuses to connect anywhere
// but a loopback address. address is the resolved "ip:port".
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if !isLoopback(host) {
		return fmt.Errorf("refusing to connect to %s: not a loopback address (see --allow-remote)", address)
	}
	return nil
}
