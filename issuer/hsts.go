package issuer

import "net/http"

// hstsValue tells browsers and HSTS-aware clients to reach this host over HTTPS
// only, for a year. No includeSubDomains: the STS's host name may share a parent
// domain with services it knows nothing of.
const hstsValue = "max-age=31536000"

// withHSTS sets Strict-Transport-Security on responses served over TLS; a response
// over plain HTTP (insecure_http behind a local proxy) carries none, as RFC 6797
// requires.
func withHSTS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			w.Header().Set("Strict-Transport-Security", hstsValue)
		}
		h.ServeHTTP(w, r)
	})
}
