package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/internal/jwtcore"
	"github.com/safeconduct/safeconduct/revocation"
)

// Status lists (Config.StatusLists): a token's status claim names a list of the
// issuer (uri under Issuer + "/statuslists/") and its index. The Verifier fetches
// the list (Accept: application/statuslist+jwt), checks the Status List Token
// (typ statuslist+jwt, signature by a key of the issuer, sub = the uri, exp),
// keeps it until its ttl or exp, whichever comes first, and reads the status at
// the index: 0 valid, anything else revoked. It fails closed: a token without a
// status reference, or with one outside the issuer, is invalid; a list that
// cannot be fetched or checked makes Verify return ErrStale; an index outside
// the list is invalid.

const (
	// statusListPath is where the STS serves its lists (issuer.PathStatusLists).
	statusListPath = "/statuslists/"
	// maxStatusListToken bounds a fetched Status List Token; maxStatusListBytes
	// the decompressed list (2^24 one-bit statuses).
	maxStatusListToken = 4 << 20
	maxStatusListBytes = 2 << 20
	// maxStatusListsCached bounds the lists kept.
	maxStatusListsCached = 256
	// defaultStatusListTTL is used when a list has no ttl claim.
	defaultStatusListTTL = 30 * time.Second
	maxStatusListTTL     = 10 * time.Minute
)

type statusLists struct {
	issuer string
	client *http.Client
	keys   KeySource
	now    func() time.Time

	mu    sync.Mutex
	lists map[string]*cachedList
}

type cachedList struct {
	mu      sync.Mutex // one fetch at a time
	list    *revocation.StatusList
	until   time.Time
	lastErr error
	errAt   time.Time
	used    time.Time
}

func newStatusLists(cfg Config, keys KeySource) *statusLists {
	return &statusLists{issuer: strings.TrimSuffix(cfg.Issuer, "/"), client: limitedClient(cfg.HTTPClient, maxStatusListToken),
		keys: keys, now: cfg.Now, lists: map[string]*cachedList{}}
}

// statusRef reads status.status_list {idx, uri} of verified claims.
func statusRef(c map[string]any) (string, int, error) {
	st, _ := c["status"].(map[string]any)
	sl, _ := st["status_list"].(map[string]any)
	if sl == nil {
		return "", 0, errors.New("no status.status_list claim (the STS has status lists off?)")
	}
	uri, _ := sl["uri"].(string)
	idx, ok := sl["idx"].(float64)
	if !ok || idx < 0 || idx != float64(int64(idx)) || idx >= 1<<31 {
		return "", 0, errors.New("status.status_list.idx is not a non-negative integer")
	}
	return uri, int(idx), nil
}

// check returns nil for a token whose status is valid.
func (s *statusLists) check(ctx context.Context, claims map[string]any) error {
	uri, idx, err := statusRef(claims)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	name, ok := strings.CutPrefix(uri, s.issuer+statusListPath)
	if !ok || !revocation.ValidStatusListName(name) {
		// Never fetch a URL a token names outside its issuer.
		return fmt.Errorf("%w: status list uri %q is not one of the issuer's", ErrInvalid, uri)
	}
	l, err := s.get(ctx, uri)
	if err != nil {
		return fmt.Errorf("%w: status list: %w", ErrStale, err)
	}
	st, err := l.Status(idx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if st != revocation.StatusValid {
		return fmt.Errorf("%w: status list says %d at %d", ErrRevoked, st, idx)
	}
	return nil
}

// get returns the list at uri, fetched unless a copy is still within its ttl.
// A failed fetch is not retried for a second.
func (s *statusLists) get(ctx context.Context, uri string) (*revocation.StatusList, error) {
	now := s.now()
	s.mu.Lock()
	c := s.lists[uri]
	if c == nil {
		if len(s.lists) >= maxStatusListsCached {
			var oldest string
			for u, x := range s.lists {
				if oldest == "" || x.used.Before(s.lists[oldest].used) {
					oldest = u
				}
			}
			delete(s.lists, oldest)
		}
		c = &cachedList{}
		s.lists[uri] = c
	}
	c.used = now
	s.mu.Unlock()

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.list != nil && now.Before(c.until) {
		return c.list, nil
	}
	if c.lastErr != nil && now.Sub(c.errAt) < time.Second && !now.Before(c.errAt) {
		return nil, c.lastErr
	}
	l, until, err := s.fetch(ctx, uri, now)
	if err != nil {
		c.list, c.lastErr, c.errAt = nil, err, now
		return nil, err
	}
	c.list, c.until, c.lastErr = l, until, nil
	return l, nil
}

func (s *statusLists) fetch(ctx context.Context, uri string, now time.Time) (*revocation.StatusList, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, time.Time{}, err
	}
	req.Header.Set("Accept", "application/statuslist+jwt")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, time.Time{}, statusError(resp)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/statuslist+jwt" {
		return nil, time.Time{}, fmt.Errorf("Content-Type %q", ct)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, time.Time{}, err
	}
	return s.parse(ctx, strings.TrimSpace(string(body)), uri, now)
}

// parse checks a Status List Token and decodes its list; the list is good until
// the earlier of iat+ttl (from now when iat is older) and exp.
func (s *statusLists) parse(ctx context.Context, raw, uri string, now time.Time) (*revocation.StatusList, time.Time, error) {
	jws, err := jose.ParseSignedCompact(raw, jwsAlgs(jwtcore.Algorithms()))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("not a JWS: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, time.Time{}, errors.New("not one signature")
	}
	h := jws.Signatures[0].Header
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "statuslist+jwt" {
		return nil, time.Time{}, fmt.Errorf("typ %q is not statuslist+jwt", typ)
	}
	keys, err := s.keys.KeysForKeyID(ctx, h.KeyID)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("keys: %w", err)
	}
	var payload []byte
	for i := range keys {
		if !keyFits(&keys[i], h.Algorithm) {
			continue
		}
		if p, err := jws.Verify(keys[i]); err == nil {
			payload = p
			break
		}
	}
	if payload == nil {
		return nil, time.Time{}, fmt.Errorf("no key of the issuer (kid %q) verifies the status list", h.KeyID)
	}
	var c struct {
		Sub        string   `json:"sub"`
		Iat        *float64 `json:"iat"`
		Exp        *float64 `json:"exp"`
		TTL        *float64 `json:"ttl"`
		StatusList *struct {
			Bits int    `json:"bits"`
			Lst  string `json:"lst"`
		} `json:"status_list"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, time.Time{}, fmt.Errorf("claims: %w", err)
	}
	switch {
	case c.Sub != uri:
		return nil, time.Time{}, fmt.Errorf("sub %q is not the uri", c.Sub)
	case c.Iat == nil:
		return nil, time.Time{}, errors.New("no iat")
	case c.StatusList == nil:
		return nil, time.Time{}, errors.New("no status_list")
	case c.TTL != nil && !(*c.TTL > 0):
		return nil, time.Time{}, errors.New("ttl is not positive")
	}
	until := now.Add(defaultStatusListTTL)
	if c.TTL != nil {
		ttl := time.Duration(min(*c.TTL, maxStatusListTTL.Seconds()) * float64(time.Second))
		until = now.Add(ttl)
	}
	if c.Exp != nil {
		exp := time.Unix(int64(*c.Exp), 0)
		if !now.Before(exp) {
			return nil, time.Time{}, errors.New("status list expired")
		}
		if exp.Before(until) {
			until = exp
		}
	}
	l, err := revocation.DecodeStatusList(c.StatusList.Lst, c.StatusList.Bits, maxStatusListBytes)
	if err != nil {
		return nil, time.Time{}, err
	}
	return l, until, nil
}
