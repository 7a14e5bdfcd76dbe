import Foundation

/// Models named as on the Hugging Face Hub (`deepseek-ai/JanusFlow-1.3B`), found where `huggingface_hub` keeps
/// them: `<cache>/models--OWNER--NAME/snapshots/<commit>/`, the commit read from `refs/<revision>` (`main` unless
/// the name ends in `@REVISION`), files symlinked into `blobs/`. The cache is `$HF_HUB_CACHE`, else
/// `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
public enum HuggingFaceCache {
    /// A model reference that is not an existing folder, not a valid Hub name, or not in the cache; the message says
    /// where it looked and how to download the model.
    public struct NotFound: Error, CustomStringConvertible, LocalizedError {
        /// The explanation shown to the user.
        public let message: String
        /// Same as `message`.
        public var description: String { message }
        /// Same as `message`, so that `localizedDescription` shows it.
        public var errorDescription: String? { message }
    }

    /// The hub cache folder for this environment.
    public static func hubDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        func nonEmpty(_ key: String) -> String? { environment[key].flatMap { $0.isEmpty ? nil : $0 } }
        if let hub = nonEmpty("HF_HUB_CACHE") ?? nonEmpty("HUGGINGFACE_HUB_CACHE") { return URL(fileURLWithPath: hub) }
        if let home = nonEmpty("HF_HOME") { return URL(fileURLWithPath: home).appendingPathComponent("hub") }
        let cache = nonEmpty("XDG_CACHE_HOME").map { URL(fileURLWithPath: $0) }
            ?? URL(fileURLWithPath: nonEmpty("HOME") ?? NSHomeDirectory()).appendingPathComponent(".cache")
        return cache.appendingPathComponent("huggingface/hub")
    }

    /// `OWNER/NAME` or `OWNER/NAME@REVISION` split, or nil when `reference` does not look like a Hub name.
    public static func parse(_ reference: String) -> (repository: String, revision: String)? {
        let parts = reference.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let repository = String(parts[0]), revision = parts.count == 2 ? String(parts[1]) : "main"
        let names = repository.split(separator: "/", omittingEmptySubsequences: false)
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_."))
        guard names.count == 2, !revision.isEmpty, !revision.contains("/"),
              names.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && $0.unicodeScalars.allSatisfy(allowed.contains) }) else { return nil }
        return (repository, revision)
    }

    /// The snapshot folder of `reference` in the cache. A revision is a branch or tag name under `refs/`, or a
    /// commit hash (a snapshot folder's name).
    public static func snapshot(_ reference: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> URL {
        guard let (repository, revision) = parse(reference) else {
            throw NotFound(message: "'\(reference)' is neither a folder nor a Hugging Face model name (OWNER/NAME or OWNER/NAME@REVISION)")
        }
        let fm = FileManager.default
        let repo = hubDirectory(environment: environment).appendingPathComponent("models--" + repository.replacingOccurrences(of: "/", with: "--"))
        let download = "download it with: huggingface-cli download \(repository)" + (revision == "main" ? "" : " --revision \(revision)")
        guard fm.fileExists(atPath: repo.path) else {
            throw NotFound(message: "\(reference): no such folder, and not in the Hugging Face cache (looked in \(repo.path)); \(download)")
        }
        let ref = repo.appendingPathComponent("refs").appendingPathComponent(revision)
        let commit = (try? String(contentsOf: ref, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? revision
        let folder = repo.appendingPathComponent("snapshots").appendingPathComponent(commit)
        var isDirectory: ObjCBool = false
        guard !commit.isEmpty, !commit.contains("/"), fm.fileExists(atPath: folder.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            let known = ((try? fm.contentsOfDirectory(atPath: repo.appendingPathComponent("refs").path)) ?? []).sorted()
            throw NotFound(message: "\(reference): the cache has \(repo.path) but no snapshot for revision '\(revision)' (refs: \(known.isEmpty ? "none" : known.joined(separator: ", "))); \(download)")
        }
        return folder
    }

    /// `path` itself when it is an existing folder, else the cached snapshot of the Hub name it spells.
    public static func resolve(_ path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> URL {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue { return URL(fileURLWithPath: path) }
        if parse(path) == nil { throw NotFound(message: "\(path): no such folder") }
        return try snapshot(path, environment: environment)
    }
}
