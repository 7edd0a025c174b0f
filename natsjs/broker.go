package natsjs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a [Broker] connection. The zero value, plus a URL,
// gives the defaults.
type Config struct {
	// URL of the server or cluster: "nats://host:port", several separated
	// by commas. Required.
	URL string
	// Name identifies the connection in the server's monitoring.
	Name string
	// Logger receives connection events. Default: discard.
	Logger *slog.Logger
	// ConnectTimeout bounds the first connection. Default 5 s. After
	// that, the connection reconnects forever.
	ConnectTimeout time.Duration
	// Replicas for the streams this broker creates. 0 (the default)
	// chooses from the server: 3 when it is a node of a cluster of three
	// or more, else 1, so that a stream outlives the loss of one node
	// wherever there are nodes to spare.
	Replicas int
	// DuplicateWindow is how long a stream remembers message ids for
	// de-duplication. Default 10 minutes.
	DuplicateWindow time.Duration
	// DeadLetterStream and DeadLetterPrefix name the dead-letter stream and
	// the prefix of its subjects (a dead letter of "sysops.ticket.created"
	// is stored on "<prefix>.sysops.ticket.created"). Defaults
	// "SYSOPS_DLQ" and "dlq".
	DeadLetterStream string
	DeadLetterPrefix string
	// InProcess, when set, connects to this server embedded in the same
	// process through a pipe instead of TCP (URL is then only a name). It
	// saves the system calls of loopback TCP — measured by
	// BenchmarkPublishBatch — but is not a network connection: the Sysops
	// Squad system does not use it, so that its services meet the
	// broker's real failure modes.
	InProcess *Server
}

// Broker is a connection to NATS JetStream. It is safe for concurrent use.
type Broker struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	cfg    Config
	logger *slog.Logger

	mu       sync.Mutex
	declared map[string]StreamSpec // by EnsureStream, by name
	healing  sync.Mutex            // one recreateLost at a time
}

// Message is what is published and what a [Handler] receives.
type Message struct {
	// ID is the message id, used for de-duplication. Required to publish.
	ID      string
	Subject string
	Header  nats.Header
	Data    []byte
}

// PubAck is the server's acknowledgement of a stored message.
type PubAck struct {
	Stream   string
	Sequence uint64
	// Duplicate is true when the id had been stored before and this
	// publish was dropped.
	Duplicate bool
}

// Errors returned by a [Broker].
var (
	// ErrNoID: a message without an id cannot be de-duplicated and is
	// refused.
	ErrNoID = errors.New("natsjs: message has no id")
	// ErrClosed: the broker was closed.
	ErrClosed = errors.New("natsjs: broker closed")
	// ErrStreamMadeAgain marks a message of a [Broker.PublishBatch] that
	// found its stream gone, which the broker has made again since: send
	// it again. It is not the message's failure.
	ErrStreamMadeAgain = errors.New("its stream was gone and is made again; send it again")
)

// Connect connects to the server or cluster at cfg.URL and checks that
// JetStream answers. An unreachable server is reported in one line.
func Connect(ctx context.Context, cfg Config) (*Broker, error) {
	if cfg.URL == "" {
		return nil, errors.New("natsjs: Config.URL is required")
	}
	cfg.ConnectTimeout = cmp.Or(cfg.ConnectTimeout, 5*time.Second)
	cfg.DuplicateWindow = cmp.Or(cfg.DuplicateWindow, 10*time.Minute)
	cfg.DeadLetterStream = cmp.Or(cfg.DeadLetterStream, "SYSOPS_DLQ")
	cfg.DeadLetterPrefix = cmp.Or(cfg.DeadLetterPrefix, "dlq")
	if err := validStreamName(cfg.DeadLetterStream); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name(cmp.Or(cfg.Name, "sysops")),
		nats.Timeout(cfg.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	}
	if cfg.InProcess != nil {
		opts = append(opts, nats.InProcessServer(cfg.InProcess.ns))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsjs: connect %s: %w", redactURL(cfg.URL), err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsjs: %w", err)
	}
	b := &Broker{nc: nc, js: js, cfg: cfg, logger: logger, declared: map[string]StreamSpec{}}
	pingCtx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	if err := b.Ping(pingCtx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsjs: %s: %w", redactURL(cfg.URL), err)
	}
	if b.cfg.Replicas == 0 {
		b.cfg.Replicas = autoReplicas(nc)
	}
	return b, nil
}

// autoReplicas is the replica count for a server that names none: 3 on
// a node of a cluster of three or more (the servers it told the client
// of), else 1.
func autoReplicas(nc *nats.Conn) int {
	if nc.ConnectedClusterName() != "" && len(nc.Servers()) >= 3 {
		return 3
	}
	return 1
}

// Replicas returns the replica count of the streams this broker creates.
func (b *Broker) Replicas() int { return b.cfg.Replicas }

// Ping checks that the connection is up and JetStream answers.
func (b *Broker) Ping(ctx context.Context) error {
	if b.nc.IsClosed() {
		return ErrClosed
	}
	if s := b.nc.Status(); s != nats.CONNECTED {
		return fmt.Errorf("natsjs: connection is %s", strings.ToLower(s.String()))
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("natsjs: jetstream: %w", err)
	}
	return nil
}

// Close drains nothing and closes the connection; subscriptions stop.
func (b *Broker) Close() { b.nc.Close() }

// ConnectedURL returns the URL of the server the broker is connected to.
func (b *Broker) ConnectedURL() string { return b.nc.ConnectedUrlRedacted() }

// InProcess reports whether the broker reaches its server through an
// in-process pipe ([Config.InProcess]) rather than the network.
func (b *Broker) InProcess() bool { return b.nc.ConnectedAddr() == "pipe" }

// StreamSpec describes a stream.
type StreamSpec struct {
	// Name of the stream: letters, digits, '-' and '_'.
	Name string
	// Subjects the stream stores.
	Subjects []string
	// WorkQueue makes the stream a work queue: a message is removed once
	// acknowledged, and each subject may have only one consumer.
	WorkQueue bool
	// MaxAge discards messages older than this. Zero keeps them.
	MaxAge time.Duration
}

// ServiceStream is the stream of events owned by service: "SYSOPS_<SERVICE>"
// holding "sysops.<service>.>".
func ServiceStream(service string) StreamSpec {
	return StreamSpec{
		Name:     "SYSOPS_" + strings.ToUpper(service),
		Subjects: []string{"sysops." + service + ".>"},
	}
}

func validStreamName(name string) error {
	if name == "" || strings.ContainsAny(name, " .*>/\\\t\n") {
		return fmt.Errorf("natsjs: stream name %q must be non-empty without spaces, '.', '*', '>' or slashes", name)
	}
	return nil
}

// errStreamStoreCreate is the server's "error creating store for stream".
const errStreamStoreCreate jetstream.ErrorCode = 10049

// EnsureStream creates the stream, or updates it to spec if it exists. It
// is idempotent and safe to call from every process at start.
//
// The broker remembers the streams it ensured. Should one of them go
// missing later — a server that came back without its store, a stream
// deleted by hand — a publish that finds no stream for its subject, or a
// subscription whose consumer went with the stream, creates it again
// (empty) instead of failing until the process restarts.
func (b *Broker) EnsureStream(ctx context.Context, spec StreamSpec) error {
	if err := b.ensureStream(ctx, spec); err != nil {
		return err
	}
	b.mu.Lock()
	b.declared[spec.Name] = spec
	b.mu.Unlock()
	return nil
}

func (b *Broker) ensureStream(ctx context.Context, spec StreamSpec) error {
	if err := validStreamName(spec.Name); err != nil {
		return err
	}
	if len(spec.Subjects) == 0 {
		return fmt.Errorf("natsjs: stream %s has no subjects", spec.Name)
	}
	for _, s := range spec.Subjects {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return fmt.Errorf("natsjs: stream %s: bad subject %q", spec.Name, s)
		}
	}
	cfg := jetstream.StreamConfig{
		Name:       spec.Name,
		Subjects:   spec.Subjects,
		Storage:    jetstream.FileStorage,
		Replicas:   b.cfg.Replicas,
		Duplicates: b.cfg.DuplicateWindow,
		MaxAge:     spec.MaxAge,
		Discard:    jetstream.DiscardOld,
	}
	if spec.WorkQueue {
		cfg.Retention = jetstream.WorkQueuePolicy
	}
	var err error
	for attempt := range 5 {
		if _, err = b.js.CreateOrUpdateStream(ctx, cfg); err == nil {
			return nil
		}
		// The server can fail to create a stream's store while another
		// stream of the account is being deleted (its directory removed
		// under it); that clears on a retry.
		apiErr, ok := errors.AsType[*jetstream.APIError](err)
		if !ok || apiErr.ErrorCode != errStreamStoreCreate {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natsjs: ensure stream %s: %w", spec.Name, err)
		case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
		}
	}
	return fmt.Errorf("natsjs: ensure stream %s: %w", spec.Name, err)
}

// EnsureDeadLetterStream creates or updates the dead-letter stream.
func (b *Broker) EnsureDeadLetterStream(ctx context.Context) error {
	return b.EnsureStream(ctx, StreamSpec{
		Name:     b.cfg.DeadLetterStream,
		Subjects: []string{b.cfg.DeadLetterPrefix + ".>"},
	})
}

// recreateLost creates again the streams this broker ensured that the
// server no longer has. Its callers are a publish that found no stream,
// and a subscription retrying its lost consumer; one check runs at a
// time. It reports whether it created any.
func (b *Broker) recreateLost(ctx context.Context) bool {
	b.healing.Lock()
	defer b.healing.Unlock()
	b.mu.Lock()
	specs := make([]StreamSpec, 0, len(b.declared))
	for _, s := range b.declared {
		specs = append(specs, s)
	}
	b.mu.Unlock()
	created := false
	for _, spec := range specs {
		_, err := b.js.Stream(ctx, spec.Name)
		if err == nil {
			continue
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return created // the server cannot say now (not reconnected yet)
		}
		if err := b.ensureStream(ctx, spec); err != nil {
			b.logger.WarnContext(ctx, "natsjs: stream is gone and could not be created again", "stream", spec.Name, "error", err)
			continue
		}
		b.logger.WarnContext(ctx, "natsjs: stream was gone; created it again, empty", "stream", spec.Name)
		created = true
	}
	return created
}

// noStream reports whether err is a publish that no stream took: none
// holds the subject on the server.
func noStream(err error) bool { return errors.Is(err, jetstream.ErrNoStreamResponse) }

// DeleteStream deletes a stream and everything in it. A missing stream is
// not an error. The broker no longer creates it again by itself.
func (b *Broker) DeleteStream(ctx context.Context, name string) error {
	b.mu.Lock()
	delete(b.declared, name) // deleted on purpose: not to be made again
	b.mu.Unlock()
	err := b.js.DeleteStream(ctx, name)
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("natsjs: delete stream %s: %w", name, err)
	}
	return nil
}

// StreamMessages returns the number of messages stored in a stream.
func (b *Broker) StreamMessages(ctx context.Context, name string) (uint64, error) {
	s, err := b.js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("natsjs: stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("natsjs: stream %s: %w", name, err)
	}
	return info.State.Msgs, nil
}

func toNATS(m Message) (*nats.Msg, error) {
	if m.ID == "" {
		return nil, ErrNoID
	}
	if m.Subject == "" {
		return nil, fmt.Errorf("natsjs: message %s has no subject", m.ID)
	}
	return &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}, nil
}

// IsRejected reports whether err is the broker refusing a message for
// what it is: larger than the server or the stream takes, or with a
// subject or headers it cannot carry. Sending the same message again
// cannot succeed, unlike after a timeout or an outage.
func IsRejected(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrBadHeaderMsg) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum
}

// IsUnavailable reports whether err is the broker refusing a message for
// a state of its own rather than for what the message is: out of storage
// or memory (the server's JetStream limit, or its disk, reached), an
// account over its limits, a stream at its limits that refuses new
// messages, a stream offline ([ErrStreamOffline]), or the JetStream
// system temporarily unavailable. The same
// message may be stored once that state passes: a relay counts no attempt
// for it.
func IsUnavailable(err error) bool {
	if errors.Is(err, ErrStreamOffline) {
		return true
	}
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode {
	case jsAccountResourcesExceeded, jsClusterNotAvailable, jsInsufficientResources,
		jsMemoryResourcesExceeded, jsStorageResourcesExceeded, jsStreamStoreFailed:
		return true
	}
	return false
}

// The server's error codes of a broker in a state that refuses messages
// (nats-server's errors.json; the client names only some of its codes).
const (
	jsAccountResourcesExceeded jetstream.ErrorCode = 10002
	jsClusterNotAvailable      jetstream.ErrorCode = 10008
	jsInsufficientResources    jetstream.ErrorCode = 10023
	jsMemoryResourcesExceeded  jetstream.ErrorCode = 10028
	jsStorageResourcesExceeded jetstream.ErrorCode = 10047
	jsStreamStoreFailed        jetstream.ErrorCode = 10077
)

// Publish stores m and waits for the server's acknowledgement. A message
// whose id was stored before, inside the duplicate window, is acknowledged
// with Duplicate set and not stored again. It waits for the
// acknowledgement until ctx ends: bound ctx per attempt, as an
// acknowledgement lost with a dying node never comes (the relay does),
// and publish again with the same id, which stores it at most once.
func (b *Broker) Publish(ctx context.Context, m Message) (PubAck, error) {
	msg, err := toNATS(m)
	if err != nil {
		return PubAck{}, err
	}
	ack, err := b.js.PublishMsg(ctx, msg, jetstream.WithMsgID(m.ID))
	if noStream(err) && b.recreateLost(ctx) {
		ack, err = b.js.PublishMsg(ctx, msg, jetstream.WithMsgID(m.ID))
	}
	if noStream(err) && b.streamOffline(ctx, m.Subject) {
		err = fmt.Errorf("%w (%w)", err, ErrStreamOffline)
	}
	if err != nil {
		return PubAck{}, fmt.Errorf("natsjs: publish %s to %s: %w", m.ID, m.Subject, err)
	}
	return PubAck{Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// PublishBatch sends all of msgs without waiting between them, then waits
// for every acknowledgement. errs[i] is nil when msgs[i] is stored. The
// messages are sent in slice order, so the server stores those on one
// subject in that order; a caller that needs order across a failure must
// re-send from the first failed message onwards.
func (b *Broker) PublishBatch(ctx context.Context, msgs []Message) (acks []PubAck, errs []error) {
	acks = make([]PubAck, len(msgs))
	errs = make([]error, len(msgs))
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		msg, err := toNATS(m)
		if err != nil {
			errs[i] = err
			continue
		}
		futures[i], errs[i] = b.js.PublishMsgAsync(msg, jetstream.WithMsgID(m.ID))
		if errs[i] != nil {
			errs[i] = fmt.Errorf("natsjs: publish %s to %s: %w", m.ID, m.Subject, errs[i])
		}
	}
	lost := false
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			acks[i] = PubAck{Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate}
		case err := <-f.Err():
			errs[i] = fmt.Errorf("natsjs: publish %s to %s: %w", msgs[i].ID, msgs[i].Subject, err)
			lost = lost || noStream(err)
		case <-ctx.Done():
			errs[i] = fmt.Errorf("natsjs: publish %s to %s: %w", msgs[i].ID, msgs[i].Subject, ctx.Err())
		}
	}
	if lost && b.recreateLost(ctx) {
		// The failed messages stay failed: the caller sends them again
		// in its order, into the stream made again here. Their errors
		// say so, so that the caller need not count them as attempts.
		for i, err := range errs {
			if noStream(err) {
				errs[i] = fmt.Errorf("%w (%w)", err, ErrStreamMadeAgain)
			}
		}
	} else if lost {
		offline := map[string]bool{} // by subject
		for i, err := range errs {
			if !noStream(err) {
				continue
			}
			s := msgs[i].Subject
			if _, asked := offline[s]; !asked {
				offline[s] = b.streamOffline(ctx, s)
			}
			if offline[s] {
				errs[i] = fmt.Errorf("%w (%w)", err, ErrStreamOffline)
			}
		}
	}
	return acks, errs
}

// ErrStreamOffline marks a publish that no stream answered although the
// server knows a stream that holds its subject: the stream cannot lead
// itself now — on a cluster, every node that keeps a replica of it is
// down, or too few are up for a quorum. It comes back with them;
// [IsUnavailable] reports it, so that the publisher waits rather than
// count the failure against the message.
var ErrStreamOffline = errors.New("natsjs: the stream that holds the subject is offline (too few of the nodes that keep it are up)")

// streamOffline reports whether the server knows a stream that holds
// subject and that stream does not answer now (offline, leaderless, its
// info request unanswered). A subject no stream holds is not offline.
func (b *Broker) streamOffline(ctx context.Context, subject string) bool {
	name, err := b.js.StreamNameBySubject(ctx, subject)
	if err != nil {
		return false
	}
	_, err = b.js.Stream(ctx, name)
	return err != nil && !errors.Is(err, jetstream.ErrStreamNotFound)
}

// redactURL hides passwords in a comma-separated list of server URLs.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at > 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				userinfo := p[scheme+3 : at]
				if user, _, ok := strings.Cut(userinfo, ":"); ok {
					parts[i] = p[:scheme+3] + user + ":xxxxx" + p[at:]
				}
			}
		}
	}
	return strings.Join(parts, ",")
}
