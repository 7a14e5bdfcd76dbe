import Dispatch
import Foundation

/// Set when the client that asked for a job goes away; the job polls it between tokens or steps.
final class Cancellation: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false
    var isCancelled: Bool { lock.withLock { cancelled } }
    func cancel() { lock.withLock { cancelled = true } }
}

/// Runs model work one job at a time on its own thread: a job holds every core for seconds to minutes, so it must
/// not run on Swift's cooperative threads (which also serve the HTTP connections), and the pipeline is not built
/// for concurrent calls. Jobs beyond `maxQueued` waiting are refused at once instead of piling up.
final class ModelWorker: @unchecked Sendable {
    private let queue = DispatchQueue(label: "janusflow.model", qos: .userInitiated)
    private let lock = NSLock()
    private var pending = 0
    private var counts = (completed: 0, cancelled: 0)
    /// Tickets of the reservations not yet released (waiting or running), in arrival order.
    private var tickets = Set<Int>()
    private var nextTicket = 0
    let maxQueued: Int

    init(maxQueued: Int) { self.maxQueued = maxQueued }

    /// Jobs waiting or running.
    var queued: Int { lock.withLock { pending } }
    /// Jobs run to their end, and jobs stopped because their client went away.
    var finished: (completed: Int, cancelled: Int) { lock.withLock { counts } }

    private func record(cancelled: Bool) {
        lock.withLock {
            if cancelled { counts.cancelled += 1 } else { counts.completed += 1 }
        }
    }

    /// A place in the queue, taken before any response is sent (so a busy server answers 503, not a broken stream).
    final class Reservation: @unchecked Sendable {
        private let worker: ModelWorker
        private let lock = NSLock()
        private var released = false
        private var running = false
        let ticket: Int

        fileprivate init(worker: ModelWorker, ticket: Int) {
            self.worker = worker
            self.ticket = ticket
        }

        fileprivate func release() {
            let first = lock.withLock { () -> Bool in
                defer { released = true }
                return !released
            }
            if first {
                worker.lock.withLock {
                    worker.pending -= 1
                    worker.tickets.remove(ticket)
                }
            }
        }

        /// Whether its job has started (or it was released).
        var started: Bool { lock.withLock { running || released } }

        /// Jobs before this one that are still waiting or running: its place in the queue.
        var ahead: Int { worker.lock.withLock { worker.tickets.count { $0 < ticket } } }

        deinit { release() }

        /// Runs `work` when every earlier job has finished; cancelling the calling task sets its `Cancellation`.
        func run<T: Sendable>(_ work: @escaping @Sendable (Cancellation) throws -> T) async throws -> T {
            let cancellation = Cancellation()
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
                    worker.queue.async {
                        defer { self.release() }
                        self.lock.withLock { self.running = true }
                        let result = cancellation.isCancelled ? .failure(CancellationError()) : Result { try work(cancellation) }
                        self.worker.record(cancelled: cancellation.isCancelled)
                        continuation.resume(with: result)
                    }
                }
            } onCancel: {
                cancellation.cancel()
            }
        }
    }

    func reserve() throws -> Reservation {
        let ticket = try lock.withLock { () -> Int in
            // `maxQueued` waiting, plus the one running.
            guard pending <= maxQueued else {
                throw APIError(503, "the server is busy (\(pending) \(pending == 1 ? "request" : "requests") ahead); try again later")
            }
            pending += 1
            nextTicket += 1
            tickets.insert(nextTicket)
            return nextTicket
        }
        return Reservation(worker: self, ticket: ticket)
    }
}
