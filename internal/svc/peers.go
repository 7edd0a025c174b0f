package svc

import (
	"slices"
	"sync"
)

// Peers finds other services' base URLs by name. Copies share one table,
// which [Peers.Set] may replace while the service runs — so a service
// started before a peer finds it once the peer is known (`sysops serve`
// re-reads the topology file). The zero value knows no peer.
type Peers struct{ t *peerTable }

type peerTable struct {
	mu sync.RWMutex
	m  map[string]string
}

// NewPeers returns peers knowing m (copied).
func NewPeers(m map[string]string) Peers {
	p := Peers{t: &peerTable{}}
	p.Set(m)
	return p
}

// URL returns a peer's base URL, or "" if it is not known.
func (p Peers) URL(name string) string {
	if p.t == nil {
		return ""
	}
	p.t.mu.RLock()
	defer p.t.mu.RUnlock()
	return p.t.m[name]
}

// Names returns the known peers' names, sorted.
func (p Peers) Names() []string {
	if p.t == nil {
		return nil
	}
	p.t.mu.RLock()
	defer p.t.mu.RUnlock()
	names := make([]string, 0, len(p.t.m))
	for n := range p.t.m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Set replaces the known peers with m (copied).
func (p Peers) Set(m map[string]string) {
	cp := make(map[string]string, len(m))
	for k, v := range m {
		cp[k] = v
	}
	p.t.mu.Lock()
	p.t.m = cp
	p.t.mu.Unlock()
}
