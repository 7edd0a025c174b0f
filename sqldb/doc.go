// Package sqldb opens the databases the toolkit and the services run on —
// SQLite files (pure Go, no C compiler) or PostgreSQL — and gives them one
// shape: a [DB] whose writes go to a single writer and whose reads go to a
// pool, [RunInTx] for units of work, embedded migrations run at start
// ([Migrate]), and a database of its own for every service ([Provision]).
//
// # What it guarantees
//
//   - SQLite is opened in WAL mode with a busy timeout, foreign keys on,
//     synchronous=FULL (a committed transaction survives power loss; pass
//     ?synchronous=normal to trade that for speed) and exactly one writer
//     connection whose transactions begin IMMEDIATE, so two writers in one
//     process never deadlock and writers in different processes wait for
//     each other instead of failing.
//   - [RunInTx] commits only if fn returns nil, rolls back on error or panic,
//     and re-runs fn when the database reports a serialization failure or
//     deadlock (PostgreSQL 40001, 40P01) or a busy/locked database (SQLite).
//     fn must therefore touch nothing but the transaction.
//   - A [Clock] gives the database's time to processes that judge leases,
//     reservations and deadlines by it (package saga, package
//     idempotency): the machine's clock plus its offset to the database's,
//     measured once a minute or when the machine's clock jumps, so that
//     processes on machines whose clocks drift apart agree.
//   - A [Scope] shares one transaction between work that must commit
//     together though different code runs it — an HTTP request's business
//     writes ([RunInScope]) and the record of its response, which the
//     scope's owner adds when it commits (package idempotency does this).
//     Once the scope's transaction has begun, the [DB]'s own statements
//     with the scope's context run in it too.
//   - [ExecAtCommit] queues a statement whose result the transaction does
//     not read (an outbox insert, say) to run just before the COMMIT of a
//     transaction run by [RunInTx] or a [Scope]. On PostgreSQL the queued
//     statements and the COMMIT go to the server in one pipeline, saving
//     the statements' round trips; if one fails, nothing commits and the
//     commit returns its error. Elsewhere it queues nothing and says so,
//     and the caller runs the statement itself. [ExecAtCommitMerged]
//     queues items that become one statement at commit (a transaction's
//     outbox events, say). [ExecBatch] does the same
//     for a whole transaction of independent statements: its BEGIN, the
//     statements and its COMMIT in one round trip.
//   - On PostgreSQL a transaction run by [RunInTx] or a [Scope] sends its
//     BEGIN with its first statement when that is an Exec (just before it
//     when it is a query), so a short transaction of writes saves a round
//     trip, and one that runs nothing sends nothing. A pooled connection
//     found dead before anything reached the server is a retryable error
//     ([IsRetryable]): RunInTx runs fn again on another connection. So is
//     a session the server ended before the transaction's COMMIT was sent
//     ([IsSessionEnded]: a restart, a failover, pg_terminate_backend),
//     which kills every pooled connection at once; at the COMMIT itself
//     the error is returned, since the transaction may have committed.
//   - [IsUnavailable] tells a database refusing work for a state of its
//     own (read-only after a failover, out of disk, shutting down, an
//     I/O error) from one refusing what it was asked: the services answer
//     the first 503 "unavailable" with Retry-After, so that callers retry,
//     and a consumer holds its messages through it instead of failing
//     their deliveries.
//   - SQL is written once for both dialects with $1, $2 ... placeholders,
//     which both drivers accept. Where the dialects differ (types, upserts),
//     migrations keep one directory per dialect; see [Migrate].
//   - A build started on a schema that a newer build migrated (a rolling
//     upgrade under way, or one rolled back) runs on it:
//     [MigrationResult.Ahead] says so, and the services log a warning
//     naming both versions. Migrations are written for that: expand
//     first (add what the new build needs), contract in a later release
//     (drop what no running build uses).
//   - [Provision] gives each service its own SQLite file, or its own
//     PostgreSQL database owned by its own login role, with CONNECT revoked
//     from everyone else. A tool that works on a service's database from
//     outside it (an operator's command line) uses [Locate], which finds
//     that database and creates nothing, and [CheckVersion], which says
//     whether its schema is the one this build migrates to, migrating
//     nothing under a service that may be running.
//
// # What it does not promise
//
// Inside fn, use only tx: on SQLite the single writer connection is held by
// the transaction, so a write through the [DB] from inside fn waits forever.
// SQLite has no lock to take around a migration run: processes migrating
// one file at the same moment may both try a migration, and the loser
// runs again from the version it then finds (up to five times).
package sqldb
