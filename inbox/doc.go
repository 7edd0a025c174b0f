// Package inbox makes a consumer's effects exactly-once on top of
// at-least-once delivery: the idempotent consumer. [Process] runs the
// handler's writes and records the message as processed in one
// transaction, so a duplicate delivery — after a crash, a lost ack, a
// relay that published twice — is acknowledged without running the
// handler again.
//
// # What it guarantees
//
//   - Exactly-once effect per consumer: for events that carry an aggregate
//     and a sequence (everything the outbox publishes), the last applied
//     sequence of each aggregate is the de-duplication record; for other
//     events it is the message id, kept for Config.Retention.
//   - Per-aggregate order of effects: an event that arrives ahead of its
//     predecessor (a redelivery overtaken by later messages) is parked in
//     the consumer's database, acknowledged, and applied right after its
//     predecessor, in the same transaction, by the handler of its own type.
//     Concurrent consumer instances are ordered by a row lock per aggregate.
//   - Bad input loses nothing and holds back only its own aggregate: a
//     malformed envelope (bad JSON, missing id or type, an attribute that
//     is not a CloudEvents String, such as an id holding U+0000) or an
//     event type the consumer has no handler for goes to the dead-letter
//     stream with the reason at once; so do a handler's [Permanent]
//     error, a handler's panic (its transaction rolled back, the events
//     batched with it applied as if it had not been there) and the
//     database refusing a value the event carries (a number out of range,
//     say: [sqldb.IsDataError]); any other error is retried with backoff
//     and dead-lettered after the maximum deliveries. The aggregate's
//     later events wait, parked, for the dead-lettered one until it is
//     redriven once its cause is fixed (natsjs.Broker.Redrive, `sysops
//     dlq redrive`) or given up on ([Consumer.SkipGap]).
//   - An outage of the consumer's own database is nobody's message's
//     fault: when a transaction fails and the database does not answer a
//     ping, or answers that it cannot take the work just now
//     ([sqldb.IsUnavailable]: read-only after a failover, out of disk), a
//     [Consumer] holds the messages it has (the broker consumer keeps them
//     from being delivered again) and tries again until the work goes
//     through, so no outage, however long, dead-letters them.
//   - Grouped commits: a [Consumer] applies the messages that arrive
//     together in one transaction (one fsync); if one of them fails, the
//     batch is re-run one message per transaction so that only it fails.
//     On PostgreSQL a batch of 32 or more (a consumer catching up) records
//     its bookkeeping in one statement: every aggregate whose events in
//     the batch continue its sequence without a gap is advanced at once,
//     leaving only the handlers' own statements per event (duplicates,
//     gaps and parked predecessors take the per-event path in the same
//     transaction). `go test ./inbox -run '^$' -bench ConsumerDrain
//     -benchtime 1x` drains 20,000 waiting events at 5,000-6,500 events/s
//     on PostgreSQL on the project's 2-core machine, against 2,100-2,400
//     with one bookkeeping statement per event.
//
// # What it does not promise
//
// Effects outside the transaction (calling another service, sending mail)
// are not made exactly-once; make them idempotent or put them in an outbox.
// An event parked behind a predecessor that never comes (purged from the
// producer's outbox, or dropped by the stream before the consumer joined)
// stays parked until someone gives up on the missing events:
// [ListParked] lists them, [Consumer.SkipGap] skips an aggregate's gap and
// applies what was parked after it, and Config.GapTimeout has the
// consumer do so itself after that long. The skipped events are lost to
// the consumer, so the default is to wait.
package inbox
