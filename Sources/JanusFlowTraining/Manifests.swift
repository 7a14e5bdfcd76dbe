import Foundation
import JanusFlowTokenizer

/// One line of a training manifest (JSONL). Paths are relative to the manifest's folder.
///
/// - understanding: `{"image": "images/1.png", "conversation": [{"role": "User", "content": "<image_placeholder>\nWhat is it?"}, {"role": "Assistant", "content": "a red circle"}]}`
/// - generation: `{"image": "images/2.png", "caption": "a photo of a red circle"}`
/// - text: `{"text": "a triangle has three corners."}`
public enum ManifestRecord: Equatable {
    /// An image and the conversation about it.
    case understanding(image: URL, turns: [Turn])
    /// An image and its caption.
    case generation(image: URL, caption: String)
    /// A plain-text sample.
    case text(String)

    /// One message of a conversation.
    public struct Turn: Equatable, Codable {
        /// The speaker, such as `User` or `Assistant`.
        public var role: String
        /// The message text; the image goes where it says `<image_placeholder>`.
        public var content: String
        /// Creates a turn from its speaker and text.
        public init(role: String, content: String) {
            self.role = role
            self.content = content
        }
    }
}

/// The task a manifest holds, which decides the fields its lines need.
public enum ManifestKind: String, CaseIterable, Sendable {
    /// The three kinds: `understanding` (image + conversation), `generation` (image + caption) and `text`.
    case understanding, generation, text
}

/// Records that were read, and the ones skipped with the reason, for the run's report.
public struct ManifestReport: CustomStringConvertible, Equatable {
    /// Path of the manifest.
    public var file: String
    /// Non-empty lines read.
    public var lines = 0
    /// Records kept for training.
    public var used = 0
    /// Skipped records counted by reason.
    ///
    /// reason -> count
    public var skipped: [String: Int] = [:]
    /// The first few problems with their line numbers.
    public var samples: [String] = []

    /// Creates an empty report for the manifest at `file`.
    public init(file: String) { self.file = file }

    /// Counts a skipped record under `reason`, keeping its line number and `detail` among the first five samples.
    ///
    /// It does not change `used`; callers that had counted the record lower `used` themselves.
    public mutating func skip(line: Int, _ reason: String, detail: String = "") {
        skipped[reason, default: 0] += 1
        if samples.count < 5 { samples.append("line \(line): \(reason)\(detail.isEmpty ? "" : " (\(detail))")") }
    }

    /// Records skipped, over all reasons.
    public var skippedCount: Int { skipped.values.reduce(0, +) }

    /// A summary line of counts, then the sample problems indented, one per line.
    public var description: String {
        var text = "\(file): \(used) of \(lines) records used"
        if !skipped.isEmpty {
            text += ", \(skippedCount) skipped: " + skipped.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
            for s in samples { text += "\n  \(s)" }
        }
        return text
    }
}

/// Reading of the JSONL training manifests.
public enum Manifest {
    /// Parses a manifest, skipping (and reporting) lines that are not valid records or whose image is missing.
    /// A missing or unreadable manifest file is an error.
    public static func read(_ url: URL, kind: ManifestKind) throws -> (records: [ManifestRecord], report: ManifestReport) {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TrainingError("\(url.path): manifest not found or not readable")
        }
        return try read(data: data, name: url.path, imageFolder: url.deletingLastPathComponent(), kind: kind)
    }

    /// `read(_:kind:)` for a manifest's bytes: `name` is what the report and errors call it, and relative image
    /// paths are looked up in `imageFolder`.
    public static func read(data: Data, name: String, imageFolder base: URL, kind: ManifestKind) throws
        -> (records: [ManifestRecord], report: ManifestReport) {
        guard let text = String(data: data, encoding: .utf8) else {
            throw TrainingError("\(name): manifest is not UTF-8 text")
        }
        var report = ManifestReport(file: name)
        var records: [ManifestRecord] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            report.lines += 1
            let number = index + 1
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                report.skip(line: number, "invalid JSON")
                continue
            }
            func image() -> URL? {
                guard let path = object["image"] as? String, !path.isEmpty else {
                    report.skip(line: number, "missing field 'image'")
                    return nil
                }
                let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)
                guard FileManager.default.fileExists(atPath: url.path) else {
                    report.skip(line: number, "missing image", detail: path)
                    return nil
                }
                return url
            }
            switch kind {
            case .understanding:
                guard let list = object["conversation"] as? [[String: Any]] else {
                    report.skip(line: number, "missing field 'conversation'")
                    continue
                }
                let turns = list.compactMap { t -> ManifestRecord.Turn? in
                    guard let role = t["role"] as? String, let content = t["content"] as? String else { return nil }
                    return .init(role: role, content: content)
                }
                // The loss masks take every odd turn as the model's: a turn out of order would train on the wrong text.
                let inOrder = turns.enumerated().allSatisfy { $0.element.role == ($0.offset % 2 == 0 ? ChatMessage.user("") : ChatMessage.assistant("")).role }
                guard turns.count == list.count, turns.count >= 2, turns.count % 2 == 0, inOrder else {
                    report.skip(line: number, "conversation must alternate User/Assistant turns with role and content")
                    continue
                }
                guard turns.contains(where: { $0.content.contains("<image_placeholder>") }) else {
                    report.skip(line: number, "no <image_placeholder> in the conversation")
                    continue
                }
                guard let img = image() else { continue }
                records.append(.understanding(image: img, turns: turns))
            case .generation:
                guard let caption = object["caption"] as? String else {
                    report.skip(line: number, "missing field 'caption'")
                    continue
                }
                guard !caption.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                    report.skip(line: number, "empty caption")
                    continue
                }
                guard let img = image() else { continue }
                records.append(.generation(image: img, caption: caption))
            case .text:
                guard let t = object["text"] as? String, !t.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                    report.skip(line: number, "missing or empty field 'text'")
                    continue
                }
                records.append(.text(t))
            }
            report.used += 1
        }
        return (records, report)
    }
}
