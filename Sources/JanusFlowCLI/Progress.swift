import Foundation

/// A one-line progress display on standard error: redrawn in place on a terminal, a line every 10% otherwise.
final class ProgressBar {
    let label: String
    let total: Int
    let start = Date()
    let interactive = isatty(2) != 0
    var lastPrinted = -1

    init(_ label: String, total: Int) {
        self.label = label
        self.total = max(total, 1)
    }

    func update(_ done: Int, detail: String = "") {
        let elapsed = Date().timeIntervalSince(start)
        let rate = done > 0 ? elapsed / Double(done) : 0
        let eta = rate * Double(total - done)
        let width = 24
        let filled = width * min(done, total) / total
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        let text = String(format: "%@ [%@] %d/%d  %.1fs elapsed, ETA %.0fs%@", label, bar, done, total, elapsed, eta,
                          detail.isEmpty ? "" : "  " + detail)
        if interactive {
            FileHandle.standardError.write(("\r" + text + (done >= total ? "\n" : "")).data(using: .utf8)!)
        } else {
            let decile = done * 10 / total
            if decile != lastPrinted || done >= total {
                lastPrinted = decile
                FileHandle.standardError.write((text + "\n").data(using: .utf8)!)
            }
        }
    }
}

/// print() buffers standard output; flush it so streamed text appears as it is produced.
func flushStandardOutput() {
    fflush(nil)
}
