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
//     fsync covers many sagas' steps ([Orchestrator.Stats]).
//
// What it does not promise: isolation. Other requests see a saga's
// intermediate states (a ticket created but not yet assigned); a
// compensated saga leaves its traces (a cancelled ticket, a refund), as a
// business reversal does.
package saga
