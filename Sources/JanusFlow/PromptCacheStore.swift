import Foundation
import MLXEngine

/// Keys/values of generation prompts kept from one generation to the next, so that a prompt asked for again (the
/// same text: a server's repeated request, another seed, more images) skips its prefill. The prompt's keys/values
/// depend on its ids alone, not on the CFG weight, the seed or the image count: the conditional rows read the whole
/// cached prompt and the unconditional rows only its BOS. Least recently used prompts go first when the kept
/// keys/values pass `maxBytes` (the 1.3B model: 98,304 values a prompt token, 24 layers of 2 x 2048). The entries belong
/// to the model's weights at the time they were computed: call `removeAll()` after changing them.
public final class PromptCacheStore: @unchecked Sendable {
    /// Bytes of keys/values kept at most (0 keeps none).
    public let maxBytes: Int
    private var entries: [(ids: [Int], caches: [KVCache], bytes: Int)] = []  // most recently used last
    private var counts = (hits: 0, misses: 0)
    private let lock = NSLock()

    /// Creates an empty store that keeps at most `maxBytes` of keys/values (default 256 MiB).
    public init(maxBytes: Int = 256 << 20) {
        precondition(maxBytes >= 0, "a prompt cache store holds zero or more bytes")
        self.maxBytes = maxBytes
    }

    /// Generations that found their prompt here, and those that computed it.
    public var hits: Int { lock.withLock { counts.hits } }
    /// Generations that did not find their prompt here and computed it.
    public var misses: Int { lock.withLock { counts.misses } }
    /// Prompts kept now, and the bytes of their keys/values.
    public var count: Int { lock.withLock { entries.count } }
    /// Bytes of keys/values kept now.
    public var bytes: Int { lock.withLock { entries.reduce(0) { $0 + $1.bytes } } }

    /// Forgets every kept prompt (the hit and miss counts are kept).
    public func removeAll() { lock.withLock { entries.removeAll() } }

    /// The caches for `ids`: kept ones, or `compute()`'s result, kept for next time. Two callers asking for a new
    /// prompt at once both compute it (the lock is not held while computing).
    func caches(for ids: [Int], compute: () throws -> [KVCache]) rethrows -> [KVCache] {
        let found: [KVCache]? = lock.withLock {
            guard let i = entries.lastIndex(where: { $0.ids == ids }) else {
                counts.misses += 1
                return nil
            }
            counts.hits += 1
            let entry = entries.remove(at: i)
            entries.append(entry)
            return entry.caches
        }
        if let found { return found }
        let computed = try compute()
        let size = computed.reduce(0) { total, cache in
            total + [cache.keys, cache.values].reduce(0) { $0 + ($1.map { $0.size * $0.dtype.size } ?? 0) }
        }
        lock.withLock {
            guard size <= maxBytes, !entries.contains(where: { $0.ids == ids }) else { return }
            var kept = entries.reduce(0) { $0 + $1.bytes }
            while kept + size > maxBytes, !entries.isEmpty { kept -= entries.removeFirst().bytes }
            entries.append((ids, computed, size))
        }
        return computed
    }
}
