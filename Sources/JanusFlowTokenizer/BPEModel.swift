import Foundation

/// Byte-level BPE: a piece's UTF-8 bytes start as single-byte symbols, then the adjacent pair with the lowest merge
/// rank is merged (leftmost first among equal ranks) until no pair has a merge, exactly as the `tokenizers`
/// library's `Word::merge_all` does. A priority queue keeps this O(n log n) for long pieces.
struct BPEModel: @unchecked Sendable {
    /// (left id, right id) -> rank << 32 | merged id. A pair listed twice keeps its last rank (as `tokenizers`).
    let merges: [UInt64: UInt64]
    /// The id of each byte's single-symbol token.
    let byteIDs: [Int32]
    /// `ignore_merges`: a piece that is itself a token is emitted whole, without merging.
    let wholeWords: [[UInt8]: Int32]?

    // Shared cache of piece -> ids (pieces repeat a lot in text).
    private let cache = Cache()

    final class Cache: @unchecked Sendable {
        let lock = NSLock()
        var entries: [[UInt8]: [Int32]] = [:]
        static let limit = 200_000
    }

    init(merges: [UInt64: UInt64], byteIDs: [Int32], wholeWords: [[UInt8]: Int32]?) {
        self.merges = merges
        self.byteIDs = byteIDs
        self.wholeWords = wholeWords
    }

    @inline(__always)
    static func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b)) }

    /// Appends the ids of one piece (its UTF-8 bytes), using the cache.
    func encode(_ bytes: [UInt8], into ids: inout [Int]) {
        if bytes.count == 1 {
            ids.append(Int(byteIDs[Int(bytes[0])]))
            return
        }
        cache.lock.lock()
        let hit = cache.entries[bytes]
        cache.lock.unlock()
        if let hit {
            for id in hit { ids.append(Int(id)) }
            return
        }
        let result = merge(bytes)
        cache.lock.lock()
        if cache.entries.count >= Cache.limit { cache.entries.removeAll(keepingCapacity: true) }
        cache.entries[bytes] = result
        cache.lock.unlock()
        for id in result { ids.append(Int(id)) }
    }

    /// The ids of one piece, without the cache.
    func merge(_ bytes: [UInt8]) -> [Int32] {
        if let wholeWords, let id = wholeWords[bytes] { return [id] }
        let n = bytes.count
        var symbols = bytes.map { byteIDs[Int($0)] }
        if n < 2 { return symbols }
        var next = [Int32](unsafeUninitializedCapacity: n) { buffer, count in
            for i in 0..<n { buffer[i] = i + 1 < n ? Int32(i + 1) : -1 }
            count = n
        }
        var prev = [Int32](unsafeUninitializedCapacity: n) { buffer, count in
            for i in 0..<n { buffer[i] = Int32(i - 1) }
            count = n
        }
        // Min-heap of rank << 32 | position (position = index of the pair's left symbol).
        var heap: [UInt64] = []
        heap.reserveCapacity(n)
        for i in 0..<(n - 1) {
            if let m = merges[BPEModel.key(symbols[i], symbols[i + 1])] {
                heap.append((m >> 32) << 32 | UInt64(i))
            }
        }
        if heap.isEmpty { return symbols }
        heap.sort()  // a sorted array is a valid min-heap
        var alive = [Bool](repeating: true, count: n)
        var remaining = n

        func push(_ v: UInt64) {
            heap.append(v)
            var c = heap.count - 1
            while c > 0 {
                let p = (c - 1) >> 1
                if heap[p] <= heap[c] { break }
                heap.swapAt(p, c)
                c = p
            }
        }
        func pop() -> UInt64 {
            let top = heap[0]
            let last = heap.removeLast()
            if !heap.isEmpty {
                heap[0] = last
                var p = 0
                let count = heap.count
                while true {
                    let l = 2 * p + 1
                    if l >= count { break }
                    var c = l
                    if l + 1 < count && heap[l + 1] < heap[l] { c = l + 1 }
                    if heap[p] <= heap[c] { break }
                    heap.swapAt(p, c)
                    p = c
                }
            }
            return top
        }

        while !heap.isEmpty {
            let top = pop()
            let rank = top >> 32
            let pos = Int(top & 0xFFFF_FFFF)
            guard alive[pos] else { continue }
            let right = Int(next[pos])
            guard right >= 0 else { continue }
            // A stale entry: the pair at this position has changed since it was queued.
            guard let m = merges[BPEModel.key(symbols[pos], symbols[right])], m >> 32 == rank else { continue }
            symbols[pos] = Int32(truncatingIfNeeded: m & 0xFFFF_FFFF)
            alive[right] = false
            remaining -= 1
            let after = next[right]
            next[pos] = after
            if after >= 0 { prev[Int(after)] = Int32(pos) }
            let before = prev[pos]
            if before >= 0, let m2 = merges[BPEModel.key(symbols[Int(before)], symbols[pos])] {
                push((m2 >> 32) << 32 | UInt64(before))
            }
            if after >= 0, let m2 = merges[BPEModel.key(symbols[pos], symbols[Int(after)])] {
                push((m2 >> 32) << 32 | UInt64(pos))
            }
        }
        var out: [Int32] = []
        out.reserveCapacity(remaining)
        var i: Int32 = 0
        while i >= 0 {
            out.append(symbols[Int(i)])
            i = next[Int(i)]
        }
        return out
    }
}
