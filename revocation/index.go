package revocation

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Index is an in-memory index of entries by anchor (Selector.Anchor), so that a
// check reads only the buckets of the facts' anchors (Facts.Anchors): its cost does
// not grow with the number of entries. The embedded store keeps its active entries
// in one; a verifier can keep a Snapshot and apply the feed's Events to one. It is
// safe for concurrent use.
type Index struct {
	mu      sync.RWMutex
	byID    map[string]*indexed
	buckets map[string]map[string]*indexed // anchor -> id -> entry
}

type indexed struct {
	entry  Entry
	sel    Selector
	anchor string
	// anyIAT: a revoke whose selector has a kid term ignores iat.
	anyIAT bool
}

// NewIndex returns an empty Index.
func NewIndex() *Index {
	return &Index{byID: map[string]*indexed{}, buckets: map[string]map[string]*indexed{}}
}

// Put adds e, replacing any entry with its ID; a lifted e is removed instead. It
// fails (ErrInvalid) for an entry without ID, of an unknown kind, whose selector
// does not parse or has no anchor, or a block with a kid term (Selector.CheckKind).
func (x *Index) Put(e Entry) error {
	if e.ID == "" {
		return invalid("entry without ID")
	}
	if e.Kind != KindRevoke && e.Kind != KindBlock {
		return invalid("unknown kind %q", e.Kind)
	}
	sel, err := ParseSelector(e.Selector)
	if err != nil {
		return err
	}
	if err := sel.CheckKind(e.Kind); err != nil {
		return err
	}
	anchor := sel.Anchor()
	if anchor == "" {
		return invalid("selector %q has no anchor", e.Selector)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(e.ID)
	if e.Lifted {
		return nil
	}
	it := &indexed{entry: e, sel: sel, anchor: anchor, anyIAT: sel.anyIssuedAt()}
	x.byID[e.ID] = it
	b := x.buckets[anchor]
	if b == nil {
		b = map[string]*indexed{}
		x.buckets[anchor] = b
	}
	b[e.ID] = it
	return nil
}

// Remove removes entry id, if present, and reports whether it was.
func (x *Index) Remove(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.removeLocked(id)
}

func (x *Index) removeLocked(id string) bool {
	it, ok := x.byID[id]
	if !ok {
		return false
	}
	delete(x.byID, id)
	if b := x.buckets[it.anchor]; b != nil {
		delete(b, id)
		if len(b) == 0 {
			delete(x.buckets, it.anchor)
		}
	}
	return true
}

// Apply applies a feed event: created puts the entry, lifted removes it.
func (x *Index) Apply(ev Event) error {
	switch ev.Type {
	case EventCreated:
		return x.Put(ev.Entry)
	case EventLifted:
		x.Remove(ev.Entry.ID)
		return nil
	}
	return invalid("unknown event type %q", ev.Type)
}

// Get returns entry id.
func (x *Index) Get(id string) (Entry, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	it, ok := x.byID[id]
	if !ok {
		return Entry{}, false
	}
	return it.entry, true
}

// Len returns the number of entries held (active or not yet pruned).
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byID)
}

// Entries returns the entries active at now, oldest first.
func (x *Index) Entries(now time.Time) []Entry {
	x.mu.RLock()
	out := make([]Entry, 0, len(x.byID))
	for _, it := range x.byID {
		if it.entry.Active(now) {
			out = append(out, it.entry)
		}
	}
	x.mu.RUnlock()
	SortEntries(out)
	return out
}

// Prune removes the entries no longer active at now and returns how many.
func (x *Index) Prune(now time.Time) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for id, it := range x.byID {
		if !it.entry.Active(now) {
			x.removeLocked(id)
			n++
		}
	}
	return n
}

// Revoked returns an active revoke that invalidates a token with facts f at now
// (see Entry.Invalidates: iat is compared with Created unless the selector has a
// kid term), or nil. If several do, it returns the one created last.
func (x *Index) Revoked(f *Facts, now time.Time) *Entry {
	return x.find(f, func(it *indexed) bool {
		return it.entry.Kind == KindRevoke && it.entry.Active(now) && it.sel.Match(f) &&
			(it.anyIAT || issuedBy(f.IssuedAt, it.entry.Created))
	})
}

// Blocked returns an active block matching f at now, or nil (the one created last
// if several do).
func (x *Index) Blocked(f *Facts, now time.Time) *Entry {
	return x.find(f, func(it *indexed) bool {
		return it.entry.Kind == KindBlock && it.entry.Active(now) && it.sel.Match(f)
	})
}

func (x *Index) find(f *Facts, ok func(*indexed) bool) *Entry {
	if f == nil {
		return nil
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	if len(x.buckets) == 0 {
		return nil
	}
	var best *indexed
	f.EachAnchor(func(a []byte) {
		for _, it := range x.buckets[string(a)] {
			if ok(it) && (best == nil || laterEntry(it.entry, best.entry)) {
				best = it
			}
		}
	})
	if best == nil {
		return nil
	}
	e := best.entry
	return &e
}

// laterEntry orders entries by Created, then ID, so a choice among several is
// deterministic.
func laterEntry(a, b Entry) bool {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c > 0
	}
	return a.ID > b.ID
}

// SortEntries sorts entries by Created, then ID (oldest first).
func SortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}
