import Foundation
import JanusFlow
import JanusFlowImageIO
import XCTest

/// Models by Hub name, found in a Hugging Face cache tree laid out as huggingface_hub writes it (blobs named by
/// hash, snapshots of symlinks, refs holding commit hashes), built here from the tiny fixture.
final class HuggingFaceCacheTests: XCTestCase {
    let commit = "0123456789abcdef0123456789abcdef01234567"
    let older = "fedcba9876543210fedcba9876543210fedcba98"

    /// `<hub>/models--OWNER--NAME` holding `folder`'s files as blobs, snapshot `commit` (refs/main) and `older` (refs/v1).
    func addRepository(_ name: String, from folder: URL, to hub: URL) throws {
        let fm = FileManager.default
        let repo = hub.appendingPathComponent("models--" + name.replacingOccurrences(of: "/", with: "--"))
        for directory in ["blobs", "refs", "snapshots/\(commit)", "snapshots/\(older)"] {
            try fm.createDirectory(at: repo.appendingPathComponent(directory), withIntermediateDirectories: true)
        }
        for (i, file) in try fm.contentsOfDirectory(atPath: folder.path).sorted().enumerated() {
            let blob = "blob\(i)"
            try fm.copyItem(at: folder.appendingPathComponent(file), to: repo.appendingPathComponent("blobs/\(blob)"))
            for snapshot in [commit, older] {
                try fm.createSymbolicLink(atPath: repo.appendingPathComponent("snapshots/\(snapshot)/\(file)").path,
                                          withDestinationPath: "../../blobs/\(blob)")
            }
        }
        try (commit + "\n").write(to: repo.appendingPathComponent("refs/main"), atomically: true, encoding: .utf8)
        try older.write(to: repo.appendingPathComponent("refs/v1"), atomically: true, encoding: .utf8)
    }

    func makeCache() throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("hf-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: root) }
        try addRepository("tiny-org/JanusFlow-tiny", from: tinyFixture.appendingPathComponent("model"), to: root.appendingPathComponent("hub"))
        try addRepository("tiny-org/vae-tiny", from: tinyFixture.appendingPathComponent("vae"), to: root.appendingPathComponent("hub"))
        return root
    }

    func testCacheLocationAndRevisions() throws {
        XCTAssertEqual(HuggingFaceCache.hubDirectory(environment: ["HF_HUB_CACHE": "/a", "HF_HOME": "/b"]).path, "/a")
        XCTAssertEqual(HuggingFaceCache.hubDirectory(environment: ["HF_HOME": "/b", "XDG_CACHE_HOME": "/c"]).path, "/b/hub")
        XCTAssertEqual(HuggingFaceCache.hubDirectory(environment: ["XDG_CACHE_HOME": "/c", "HOME": "/h"]).path, "/c/huggingface/hub")
        XCTAssertEqual(HuggingFaceCache.hubDirectory(environment: ["HOME": "/h", "HF_HOME": ""]).path, "/h/.cache/huggingface/hub")
        XCTAssertNil(HuggingFaceCache.parse("model"))
        XCTAssertNil(HuggingFaceCache.parse("/abs/path"))
        XCTAssertNil(HuggingFaceCache.parse("../x"))
        XCTAssertNil(HuggingFaceCache.parse("a/b/c"))
        XCTAssertNil(HuggingFaceCache.parse("a/b@"))
        XCTAssertEqual(HuggingFaceCache.parse("deepseek-ai/JanusFlow-1.3B")?.revision, "main")
        XCTAssertEqual(HuggingFaceCache.parse("deepseek-ai/JanusFlow-1.3B@v1")?.repository, "deepseek-ai/JanusFlow-1.3B")

        let root = try makeCache()
        let env = ["HF_HOME": root.path]
        let repo = root.appendingPathComponent("hub/models--tiny-org--JanusFlow-tiny")
        XCTAssertEqual(try HuggingFaceCache.resolve("tiny-org/JanusFlow-tiny", environment: env).path, repo.appendingPathComponent("snapshots/\(commit)").path)
        XCTAssertEqual(try HuggingFaceCache.resolve("tiny-org/JanusFlow-tiny@v1", environment: env).path, repo.appendingPathComponent("snapshots/\(older)").path)
        XCTAssertEqual(try HuggingFaceCache.resolve("tiny-org/JanusFlow-tiny@\(older)", environment: env).path, repo.appendingPathComponent("snapshots/\(older)").path)
        // Through the symlinks, the snapshot loads as the folder does.
        let model = try JanusFlowModel.load(directory: try HuggingFaceCache.resolve("tiny-org/JanusFlow-tiny", environment: env), dtype: .float32)
        XCTAssertEqual(model.config.languageConfig.vocabSize, PipelineTests.pipeline.model.config.languageConfig.vocabSize)

        XCTAssertThrowsError(try HuggingFaceCache.resolve("tiny-org/missing", environment: env)) { error in
            XCTAssertEqual("\(error)", "tiny-org/missing: no such folder, and not in the Hugging Face cache (looked in \(root.path)/hub/models--tiny-org--missing); download it with: huggingface-cli download tiny-org/missing")
        }
        XCTAssertThrowsError(try HuggingFaceCache.resolve("tiny-org/JanusFlow-tiny@v2", environment: env)) { error in
            XCTAssertEqual("\(error)", "tiny-org/JanusFlow-tiny@v2: the cache has \(repo.path) but no snapshot for revision 'v2' (refs: main, v1); download it with: huggingface-cli download tiny-org/JanusFlow-tiny --revision v2")
        }
        XCTAssertThrowsError(try HuggingFaceCache.resolve("no-such-folder", environment: env)) { XCTAssertEqual("\($0)", "no-such-folder: no such folder") }
    }

    func testCommandsTakeHubNames() throws {
        guard FileManager.default.fileExists(atPath: cliBinary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let root = try makeCache()
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "HF_HUB_CACHE")
        env["HF_HOME"] = root.path
        let image = root.appendingPathComponent("red.png")
        try RGBImage(width: 30, height: 20, fill: (200, 30, 30)).writePNG(to: image)
        let byName = try runCLI(["understand", "--model", "tiny-org/JanusFlow-tiny", "--dtype", "float32", "--image", image.path, "--max-tokens", "4", "what?"], environment: env)
        XCTAssertEqual(byName.status, 0, byName.error)
        let byPath = try runCLI(["understand", "--model", tinyFixture.appendingPathComponent("model").path, "--dtype", "float32", "--image", image.path,
                                 "--max-tokens", "4", "what?"], environment: env)
        XCTAssertEqual(byName.output, byPath.output)

        let out = root.appendingPathComponent("generated")
        let generated = try runCLI(["generate", "--model", "tiny-org/JanusFlow-tiny", "--vae", "tiny-org/vae-tiny", "--steps", "1", "--out", out.path, "x"],
                                   environment: env)
        XCTAssertEqual(generated.status, 0, generated.error)
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasSuffix(".png") }.isEmpty)

        let missing = try runCLI(["understand", "--model", "deepseek-ai/JanusFlow-1.3B", "--image", image.path, "q"], environment: env)
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.error.contains("--model deepseek-ai/JanusFlow-1.3B: no such folder, and not in the Hugging Face cache (looked in \(root.path)/hub/models--deepseek-ai--JanusFlow-1.3B); download it with: huggingface-cli download deepseek-ai/JanusFlow-1.3B"), missing.error)
    }
}
