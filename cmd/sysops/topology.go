package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// topologyFile is written in the data directory by `up` and updated by
// `serve`, so that processes started later find the broker and each other.
const topologyFile = "topology.json"

// Topology says where the broker and each service are.
type Topology struct {
	NATSURL  string                   `json:"nats_url"`
	Services map[string]TopologyEntry `json:"services"`
}

// TopologyEntry is one service's place in the [Topology].
type TopologyEntry struct {
	URL      string `json:"url"`
	Database string `json:"database"`
}

// peers returns every service's URL but self's.
func (t Topology) peers(self string) map[string]string {
	out := map[string]string{}
	for name, e := range t.Services {
		if name != self {
			out[name] = e.URL
		}
	}
	return out
}

// readTopology reads the topology file; a missing file is an empty topology.
func readTopology(dataDir string) (Topology, error) {
	t := Topology{Services: map[string]TopologyEntry{}}
	b, err := os.ReadFile(filepath.Join(dataDir, topologyFile))
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return t, fmt.Errorf("read topology: %w", err)
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return t, fmt.Errorf("topology file %s is not valid JSON: %w", filepath.Join(dataDir, topologyFile), err)
	}
	if t.Services == nil {
		t.Services = map[string]TopologyEntry{}
	}
	return t, nil
}

// updateTopology applies fn to the topology file under an exclusive lock,
// then replaces the file atomically, so concurrent `serve` processes do not
// lose each other's entries.
func updateTopology(dataDir string, fn func(*Topology)) error {
	lock, err := os.OpenFile(filepath.Join(dataDir, topologyFile+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("lock topology: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock topology: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	t, err := readTopology(dataDir)
	if err != nil {
		return err
	}
	fn(&t)
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dataDir, topologyFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write topology: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dataDir, topologyFile)); err != nil {
		return fmt.Errorf("write topology: %w", err)
	}
	return nil
}
