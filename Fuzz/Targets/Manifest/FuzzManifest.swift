import Foundation
import FuzzSupport
import JanusFlowTraining

/// Any bytes as a JSONL training manifest; the first byte picks the kind (understanding, generation, text), and
/// the image `a.png` exists beside it so that records can get past the image check.
@main
struct FuzzManifest {
    static func main() {
        let folder = FuzzTarget.scratchFolder()
        _ = FileManager.default.createFile(atPath: folder.appendingPathComponent("a.png").path, contents: Data([0x89, 0x50, 0x4e, 0x47]))
        FuzzTarget.run { data in
            guard let first = data.first else { return }
            let kind = ManifestKind.allCases[Int(first) % ManifestKind.allCases.count]
            do {
                let (records, report) = try Manifest.read(data: data.dropFirst(), name: "manifest.jsonl", imageFolder: folder, kind: kind)
                precondition(records.count == report.used, "\(records.count) records but the report says \(report.used) used")
                _ = report.description
            } catch is TrainingError {
            } catch {
                fatalError("Manifest.read threw \(type(of: error)), not TrainingError: \(error)")
            }
        }
    }
}
