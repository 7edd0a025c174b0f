// Package saga runs orchestrated sagas: a workflow across services that
// each own their data, made of local steps, each with a compensation (a
// business reversal: cancel, refund, release) that undoes it if a later
// step fails.
//
// What it guarantees:
//
//   - Durability: every saga is logged in the orchestrator's own database
//     (tables saga and saga_step, see [Migrations]) before each step is
//     called and after it returns. An orchestrator that crashes loses
//     nothing: on [Orchestrator.Start] an instance resumes every
//     unfinished saga, and several instances share the work through
//     leases in the database — a dead instance's sagas are taken over when
//     its lease expires. A saga finishes on the [Definition] version it
//     started with.
//   - Every saga ends committed (every action applied) or compensated
//     (every step that was called undone, last first) — or, when a
//     compensation keeps failing past its retry budget, needs_attention,
//     keeping the error, for a person to [Retry], [Skip] or [Resolve]
//     (also over HTTP, [Handler], and `sysops saga ...`).
//   - Every call carries an idempotency key derived from the saga id and
//     the step ([ActionKey], [CompensationKey]), the same on every retry
//     and after any crash. A step may be called more than once (a crash
//     between the call and its log write, a timeout); a participant that
//     honours the key applies it once.
//   - Compensations run for every step whose action was called, including
//     the one that failed (it may have applied before failing), so a
//     participant must treat a compensation that arrives before its action
//     as "nothing to undo" and then refuse the late action.
//   - No retry storms: retries back off exponentially with full jitter;
//     each participant has a circuit breaker (calls it refuses do not use
//     up retry budgets, they wait for its cooldown) and a concurrency
//     limit.
//   - A saga that is cancelled ([Cancel]) or runs past its deadline turns
//     back and compensates — unless it has passed a Forward step (the
//     pivot), after which it only goes forward.
//   - Log writes of concurrent sagas share commits: a write joins the
//     transaction being assembled while the previous one commits, so one
//     fsync covers many sagas' steps ([Orchestrator.Stats]). On
//     PostgreSQL every log write is one statement (a saga's state, its
//     lease fence and its step records together), and a shared
//     transaction goes to the server in one round trip, its BEGIN, writes
//     and COMMIT pipelined.
//
// # Measured
//
// The create-ticket saga of the Sysops Squad (4 steps: open the ticket,
// count it on the customer, assign an expert, mark the ticket assigned),
// its participants real services with their own databases called over
// loopback HTTP, on the project's machine (2 cores), with
//
//	go run ./cmd/sysops bench saga --postgres 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
//	go run ./cmd/sysops bench saga
//
//	                                PostgreSQL (fsync on)            SQLite (synchronous=FULL)
//	committed,   concurrency 1      101-118 sagas/s, p50 8-9 ms,     140 sagas/s, p50 7 ms, p99 10
//	                                p99 13-16
//	committed,   concurrency 16     209-273 sagas/s, p50 57-75 ms    270 sagas/s, p50 56 ms
//	committed,   concurrency 64     267-331 sagas/s, p50 189-232 ms, 258 sagas/s, p50 221 ms, p99 646
//	                                p99 308-388 ms
//	compensated, concurrency 64     299-335 sagas/s, p50 185-209 ms  255 sagas/s, p50 231 ms
//
// (three runs on PostgreSQL and one on SQLite. The previous round's
// figures, 210-213 committed sagas/s at concurrency 64 and 80-82 at 1, rose
// with three changes: on PostgreSQL every log write is one statement and
// a shared log transaction one round trip; the participants' outbox
// inserts and new Idempotency-Keys travel with their COMMITs
// ([sqldb.ExecAtCommit]); and the assignment service no longer queues every
// saga on one expert's row. Measured alternately against the build before
// it, the log change alone moved concurrency 64 from 227-300 to 275-295
// committed sagas/s: within the machine's noise, which is wide. Two
// attempts to remove the cancel check before each step, 4 of the
// statements, gained nothing and were not kept: reading the request in
// the step's log write, and hearing of it by LISTEN/NOTIFY instead of
// reading it, which ran at 263-292 against 294-305 sagas/s in alternated
// runs.)
//
// Against the target of 1,500 committed sagas/s at concurrency 64 on
// PostgreSQL this is 4.5 to 5.5 times short, and the machine is the
// limit: vmstat shows the two cores busy all the time (about 65% user and
// 33% system, 40,000-46,000 context switches a second, some 150 per
// saga), about half of it in PostgreSQL and most of the rest in the
// services' Go code (HTTP both ways, JSON, database/sql). pg_stat_statements
// over 5 seconds at concurrency 64 counted about 56 statements per saga
// across the four databases (71 before this round): the orchestrator's log
// 12 (a saga's begin, its step starts and ends, the cancel check before
// each step, the final read), the ticket 17, the assignment 16, the
// customer 11 — each participant call an Idempotency-Key lookup and
// record, its business statements, its event and audit record in the
// outbox, and the relay that publishes them. At
// tens of microseconds of PostgreSQL CPU per statement, plus the round
// trip and context switches on each side, 1,500 sagas/s would need well
// under 15 statements per saga with its four participants over HTTP,
// which no design that keeps each participant's database, its outbox and
// the orchestrator's durable log can reach on two cores.
//
// What it does not promise: isolation. Other requests see a saga's
// intermediate states (a ticket created but not yet assigned); a
// compensated saga leaves its traces (a cancelled ticket, a refund), as a
// business reversal does.
package saga
