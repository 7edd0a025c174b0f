package natsjs

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerConfig configures an embedded NATS server. The zero value, plus a
// StoreDir, gives a JetStream server on a random loopback port.
type ServerConfig struct {
	// StoreDir is where JetStream keeps its files. Required.
	StoreDir string
	// Host to listen on. Default 127.0.0.1: the embedded server is for one
	// machine; run a real cluster for more.
	Host string
	// Port to listen on; 0 picks a free one.
	Port int
	// Name of the server, shown to clients. Default "sysops".
	Name string
	// StartTimeout bounds waiting for the server to accept connections.
	// Default 10 s.
	StartTimeout time.Duration
	// Cluster, when set, makes the server one node of a JetStream
	// cluster, on Host. Each node needs its own Name and StoreDir.
	Cluster *ClusterConfig
	// MaxStore is the most bytes JetStream may keep on disk; once its
	// streams hold that much, publishes are refused ([IsUnavailable])
	// until space is freed. Default: the server's own, three quarters of
	// the free space of StoreDir's disk.
	MaxStore int64
}

// ClusterConfig makes an embedded server a node of a cluster.
type ClusterConfig struct {
	// Name of the cluster, the same on every node. Required.
	Name string
	// Port for the routes between nodes; 0 picks a free one.
	Port int
	// Routes are the other nodes' route URLs ("nats-route://host:port");
	// listing this node too is harmless, so every node can get one list.
	Routes []string
}

// Server is an embedded NATS server with JetStream.
type Server struct {
	ns   *server.Server
	lock *os.File // holds the store directory for this server alone
}

// ErrStoreInUse: another server, in this process or another, has the
// store directory (two servers writing one store would corrupt it).
var ErrStoreInUse = errors.New("natsjs: store directory in use by another server")

// lockStore creates dir if need be and takes an exclusive lock on it for
// as long as the returned file stays open; the lock goes with the
// process, however it ends.
func lockStore(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("natsjs: store dir %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "sysops.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("natsjs: store dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (is another sysops up running on the same data directory?)", ErrStoreInUse, dir)
		}
		return nil, fmt.Errorf("natsjs: lock store dir %s: %w", dir, err)
	}
	return f, nil
}

// RunServer starts an embedded NATS server with JetStream enabled and
// returns once it accepts connections. It holds its store directory
// alone until Shutdown (or the process ends): a second server on it is
// refused with [ErrStoreInUse].
func RunServer(cfg ServerConfig) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsjs: ServerConfig.StoreDir is required")
	}
	port := cfg.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName:            cmp.Or(cfg.Name, "sysops"),
		Host:                  cmp.Or(cfg.Host, "127.0.0.1"),
		Port:                  port,
		JetStream:             true,
		StoreDir:              cfg.StoreDir,
		NoSigs:                true,
		NoLog:                 true,
		MaxPayload:            8 << 20,
		DisableShortFirstPing: true,
		JetStreamMaxStore:     cfg.MaxStore,
	}
	if c := cfg.Cluster; c != nil {
		if c.Name == "" {
			return nil, errors.New("natsjs: ServerConfig.Cluster.Name is required")
		}
		routes, err := routeURLs(c.Routes)
		if err != nil {
			return nil, err
		}
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: opts.Host, Port: cmp.Or(c.Port, server.RANDOM_PORT)}
		opts.Routes = routes
	}
	if cfg.Port != 0 {
		// The server reports a busy port only by never becoming ready;
		// find out now, in one clear line.
		addr := net.JoinHostPort(opts.Host, strconv.Itoa(cfg.Port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("natsjs: embedded server: cannot listen on %s: %w", addr, errors.Unwrap(err))
		}
		l.Close()
	}
	lock, err := lockStore(cfg.StoreDir)
	if err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("natsjs: embedded server: %w", err)
	}
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				errc <- fmt.Errorf("%v", p)
			}
		}()
		ns.Start()
	}()
	timeout := cmp.Or(cfg.StartTimeout, 10*time.Second)
	if !ns.ReadyForConnections(timeout) {
		ns.Shutdown()
		lock.Close()
		select {
		case err := <-errc:
			return nil, fmt.Errorf("natsjs: embedded server on %s:%d: %w", opts.Host, cfg.Port, err)
		default:
		}
		return nil, fmt.Errorf("natsjs: embedded server on %s:%d did not accept connections within %s (port in use or store dir %s unusable?)",
			opts.Host, cfg.Port, timeout, cfg.StoreDir)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		lock.Close()
		return nil, fmt.Errorf("natsjs: embedded server: JetStream did not start (store dir %s)", cfg.StoreDir)
	}
	return &Server{ns: ns, lock: lock}, nil
}

// routeURLs parses a cluster's route URLs.
func routeURLs(routes []string) ([]*url.URL, error) {
	var out []*url.URL
	for _, r := range routes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("natsjs: route %q: want nats-route://host:port", r)
		}
		out = append(out, u)
	}
	return out, nil
}

// Name returns the server's name.
func (s *Server) Name() string { return s.ns.Name() }

// ClientURL returns the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Shutdown stops the server and waits until it has stopped.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	s.lock.Close() // the store is free for another server
}
