package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

var (
	// ErrRedirect: the server answered with a redirect, which is never followed.
	ErrRedirect = errors.New("redirects are not followed")
	// ErrTooLarge: the response (or file) exceeds the size limit.
	ErrTooLarge = errors.New("response exceeds the size limit")
)

// DefaultTransport is a transport with the system roots, TLS 1.2 or later, the
// environment's proxy, a response header deadline of timeout and a 64 KiB cap on
// response headers.
func DefaultTransport(timeout time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	t.ResponseHeaderTimeout = timeout
	t.MaxResponseHeaderBytes = 64 << 10
	return t
}

// Transport returns the transport of base: its Transport, http.DefaultTransport for
// a client without one, or DefaultTransport(timeout) when base is nil.
func Transport(base *http.Client, timeout time.Duration) http.RoundTripper {
	switch {
	case base == nil:
		return DefaultTransport(timeout)
	case base.Transport != nil:
		return base.Transport
	default:
		return http.DefaultTransport
	}
}

// NewClient returns a client over rt that bounds every request by timeout, refuses
// redirects and non-200 answers, and caps bodies at maxBytes.
func NewClient(rt http.RoundTripper, timeout time.Duration, maxBytes int64) *http.Client {
	return &http.Client{
		Transport: &boundedTransport{base: rt, max: maxBytes},
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return ErrRedirect
		},
	}
}

// Get fetches uri with client (one built by NewClient) and returns the body.
func Get(ctx context.Context, client *http.Client, uri, accept string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, http.NoBody)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// ReadAll reads r up to maxBytes; more fails with ErrTooLarge.
func ReadAll(r io.Reader, maxBytes int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > maxBytes {
		return nil, ErrTooLarge
	}
	return data, nil
}

// boundedTransport refuses non-200 responses and caps response bodies.
type boundedTransport struct {
	base http.RoundTripper
	max  int64
}

func (t *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			return nil, fmt.Errorf("status %d: %w", resp.StatusCode, ErrRedirect)
		}
		return nil, fmt.Errorf("unexpected status %d", resp.StatusCode)
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, fmt.Errorf("%w (%d > %d bytes)", ErrTooLarge, resp.ContentLength, t.max)
	}
	resp.Body = &cappedBody{rc: resp.Body, left: t.max}
	return resp, nil
}

// cappedBody fails the read that would take the body past its cap.
type cappedBody struct {
	rc   io.ReadCloser
	left int64 // bytes still allowed; -1 once the cap was exceeded
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, ErrTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1] // one byte past the cap is enough to know
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, ErrTooLarge
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }
