package issuer

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// signing is the signing keys concern: the ring loaded at start, the key manager
// that keeps it live (re-reading key_dir, following the schedule), the minter
// that signs with the active key, and the JWKS and discovery documents of the
// ring in force.
type signing struct {
	// ring is the ring loaded at start; ring.live is its key manager (nil when
	// the schedule could not be computed: the start ring is then served as it is).
	ring   *keyRing
	minter *minter
	// issuer and now are the server's, for verifyOwn.
	issuer string
	now    func() time.Time

	jwksHandler, discoveryHandler http.HandlerFunc
}

// newSigning wires the keys loaded at start to a key manager: minting follows the
// ring's active key, and the handlers serve the current JWKS and discovery
// documents. Key rotation is audited like the other security decisions.
func newSigning(c *core, ring *keyRing, meta discoveryMeta) (*signing, error) {
	m, err := newMinter(c.issuer, ring.active)
	if err != nil {
		return nil, err
	}
	k := &signing{ring: ring, minter: m, issuer: c.issuer, now: c.now}
	if ring.kidsErr != nil {
		c.log.Warn("key_dir/kids cannot be appended to (a read-only key_dir?): a key whose file is removed stays revocable by kid "+
			"only while this process runs, unless key_dir/kids lists it (stsctl keys rotate keeps that file)", "error", ring.kidsErr.Error())
	}
	km, err := newKeyManager(c.issuer, meta, ring, c.maxTTL, c.now, func(err error) {
		c.log.Error("signing keys reload failed; keeping the last good keys", "error", err.Error())
	})
	if err != nil {
		// The ring was valid at the clock it was loaded with; serve it as it is.
		c.log.Error("signing keys schedule", "error", err.Error())
		doc, err := discoveryDoc(c.issuer, ring, meta)
		if err != nil {
			return nil, err
		}
		cc := cacheControl()
		k.jwksHandler, k.discoveryHandler = staticJSON(ring.jwks, cc), staticJSON(doc, cc)
		return k, nil
	}
	km.onChange = func(old, next *keyRing) {
		c.auditLog.LogAttrs(context.Background(), slog.LevelInfo, "key_rotation",
			slog.String("event", "key_rotation"),
			slog.String("previous_kid", old.active.kid), slog.String("kid", next.active.kid),
			slog.Any("published", keyIDs(next.keys)))
	}
	ring.live = km
	m.signer = &ringSigner{m: km, opts: m.signer.Options()}
	k.jwksHandler = km.serve(func(r *keyRing) []byte { return r.jwks })
	k.discoveryHandler = km.serve(func(r *keyRing) []byte { return r.discovery })
	return k, nil
}

// currentRing is the key ring in force now (the live one, else the start ring).
func (k *signing) currentRing() *keyRing {
	if k.ring.live != nil {
		return k.ring.live.current()
	}
	return k.ring
}

// reload re-reads key_dir at once.
func (k *signing) reload() error {
	if k.ring.live == nil {
		return nil
	}
	return k.ring.live.reload()
}
