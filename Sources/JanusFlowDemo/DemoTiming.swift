import Foundation
import MLXEngine

/// Wall time of a demo run by phase (`scores.json`'s `time`): each `mark` closes the phase the previous one opened,
/// so everything between marks, data preparation included, belongs to some phase.
final class PhaseClock {
    private var current: (name: String, since: Date)?
    private var phases: [(name: String, seconds: Double)] = []

    /// Ends the running phase and starts `name`.
    func mark(_ name: String) {
        let now = Date()
        if let current { phases.append((current.name, now.timeIntervalSince(current.since))) }
        current = (name, now)
    }

    /// The report: total and per-phase seconds (the running phase ended now), the host's cores and its f32 GEMM
    /// peak read now (OpenBLAS sgemm 2048^3, so a figure from another host or hour can be put in proportion).
    func report() -> [String: Any] {
        mark("")
        current = nil
        let peak = MachineFigures.sgemmPeak()
        return ["total_seconds": phases.reduce(0) { $0 + $1.seconds },
                "phases_seconds": Dictionary(phases.map { ($0.name, $0.seconds) }, uniquingKeysWith: +),
                "cores": ProcessInfo.processInfo.activeProcessorCount,
                "sgemm_peak_gflops": peak]
    }
}
