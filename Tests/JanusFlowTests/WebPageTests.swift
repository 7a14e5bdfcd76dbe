import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowServer
import JanusFlowTokenizer
import XCTest

/// The page at `/`: its files over real sockets, the queue position streams carry for it, and the page itself driven
/// in headless Chromium (scripts/browser-check) with what it shows compared with the library's answers and images.
final class WebPageTests: XCTestCase {
    var pipeline: JanusFlowPipeline { PipelineTests.pipeline }
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testThePageIsServedWithoutTheKeyAndWithItsPolicy() throws {
        let server = RunningServer(JanusFlowServer(pipeline: pipeline, configuration: ServerConfiguration(port: 0, apiKey: "secret")))
        let port = try server.port()
        let web = Self.packageRoot.appendingPathComponent("Sources/JanusFlowServer/Web")
        for (path, file, type) in [("/", "index.html", "text/html; charset=utf-8"), ("/index.html", "index.html", "text/html; charset=utf-8"),
                                   ("/web/app.js", "app.js", "text/javascript; charset=utf-8"), ("/web/style.css", "style.css", "text/css; charset=utf-8")] {
            let reply = try HTTPReply.fetch(port: port, method: "GET", path: path)
            XCTAssertEqual(reply.status, 200, path)
            XCTAssertEqual(reply.headers["content-type"], type, path)
            XCTAssertEqual(reply.body, try Data(contentsOf: web.appendingPathComponent(file)), "\(path) is not the package's \(file)")
            let policy = try XCTUnwrap(reply.headers["content-security-policy"], path)
            XCTAssertTrue(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"), policy)
        }
        // The page holds no secret; the model does: its endpoints still want the key.
        XCTAssertEqual(try HTTPReply.fetch(port: port, method: "GET", path: "/v1/models").status, 401)
        XCTAssertEqual(try HTTPReply.fetch(port: port, method: "GET", path: "/web/other.js").status, 401)
        // Every resource the page names is one the server serves (nothing from elsewhere).
        let html = String(decoding: try HTTPReply.fetch(port: port, method: "GET", path: "/").body, as: UTF8.self)
        let references = html.components(separatedBy: "src=\"").dropFirst().map { $0.prefix { $0 != "\"" } }
            + html.components(separatedBy: "href=\"").dropFirst().map { $0.prefix { $0 != "\"" } }
        XCTAssertEqual(Set(references.map(String.init)), ["/web/app.js", "/web/style.css"])
    }

    func testAStreamWaitingBehindAnotherSaysItsPlace() throws {
        let server = RunningServer(JanusFlowServer(pipeline: pipeline, configuration: ServerConfiguration(port: 0, maxSteps: 100_000)))
        let port = try server.port()
        let long = try HTTPStream(port: port, method: "POST", path: "/v1/generate",
                                  body: try JSONSerialization.data(withJSONObject: ["prompt": "a red circle", "steps": 100_000, "stream": true]))
        XCTAssertEqual(try long.nextEvent()["step"] as? Int, 0)
        let png = try RGBImage(width: 30, height: 20, fill: (200, 30, 30)).pngData().base64EncodedString()
        let waiting = try HTTPStream(port: port, method: "POST", path: "/v1/understand", body: try JSONSerialization.data(withJSONObject: [
            "image": png, "question": "what is it?", "max_tokens": 3, "stream": true]))
        XCTAssertEqual(try waiting.nextRawEvent(), ": queued 1")
        long.close()
        XCTAssertEqual(try waiting.nextRawEvent(), ": queued 0")
        let expected = try pipeline.answer(image: RGBImage(width: 30, height: 20, fill: (200, 30, 30)), question: "what is it?",
                                           parameters: SamplingParameters(maxNewTokens: 3))
        var event = try waiting.nextEvent()
        while event["done"] == nil { event = try waiting.nextEvent() }
        XCTAssertEqual(event["answer"] as? String, expected.text)
    }

    /// Debian's chromium, or `JANUSFLOW_CHROMIUM`.
    static var chromium: String? {
        if let path = ProcessInfo.processInfo.environment["JANUSFLOW_CHROMIUM"], !path.isEmpty { return path }
        return ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func testThePageAnswersGeneratesAndStopsInChromium() throws {
        guard let chromium = Self.chromium else {
            let reason = "chromium is not installed (make test installs Debian's chromium package; or set JANUSFLOW_CHROMIUM): the browser test did not run"
            print("WebPageTests: \(reason)")
            throw XCTSkip(reason)
        }
        let server = RunningServer(JanusFlowServer(pipeline: pipeline, configuration: ServerConfiguration(port: 0, maxSteps: 100_000, modelName: "tiny-janusflow")))
        let port = try server.port()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("janusflow-page-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let image = RGBImage(width: 40, height: 28, fill: (30, 160, 60))
        let imageFile = folder.appendingPathComponent("green.png")
        try image.pngData().write(to: imageFile)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.packageRoot.appendingPathComponent("scripts/browser-check").path, "--chromium", chromium,
                             "--url", "http://127.0.0.1:\(port)/", "--image", imageFile.path, "--question", "What is in this picture?",
                             "--second-question", "And its colour?", "--max-tokens", "8", "--prompt", "a red circle", "--steps", "2",
                             "--seed", "7", "--out", folder.path]
        let output = Pipe(), errors = folder.appendingPathComponent("stderr.txt")
        FileManager.default.createFile(atPath: errors.path, contents: nil)
        process.standardOutput = output
        process.standardError = try FileHandle(forWritingTo: errors)
        try process.run()
        let printed = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let stderr = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
        XCTAssertEqual(process.terminationStatus, 0, "browser-check failed:\n\(stderr.suffix(3000))")
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: printed) as? [String: Any], String(decoding: printed, as: UTF8.self))

        XCTAssertEqual(report["model_label"] as? String, "tiny-janusflow · \(pipeline.imageSize) px")
        XCTAssertEqual(report["key_prompt_shown"] as? Bool, false, "the API-key prompt shows for a server without a key")
        // The streamed answer the page shows is the library's greedy answer, and the second turn continues the first.
        let first = try pipeline.answer(image: image, question: "What is in this picture?", parameters: SamplingParameters(maxNewTokens: 8))
        XCTAssertEqual(report["answer"] as? String, first.text)
        XCTAssertEqual(report["user_images_shown"] as? Int, 1)
        let second = try pipeline.answer(conversation: [.user("\(ChatTemplate.imageTag)\nWhat is in this picture?"), .assistant(first.text),
                                                        .user("And its colour?")], images: [image], parameters: SamplingParameters(maxNewTokens: 8))
        XCTAssertEqual(report["second_answer"] as? String, second.text)
        // The image it shows (and offers as a PNG) is the library's, pixel for pixel.
        let expected = try pipeline.generate(prompt: "a red circle", count: 1, steps: 2, cfg: 2, seed: 7)
        let shown = try XCTUnwrap(report["images"] as? [String]).map { try RGBImage(data: Data(base64Encoded: $0)!) }
        XCTAssertEqual(shown.count, 1)
        XCTAssertEqual(shown.first?.pixels, expected.first?.pixels)
        XCTAssertEqual(report["downloads"] as? [String], ["a-red-circle-7-1.png"])
        XCTAssertEqual(report["progress_width"] as? String, "100%")
        // Stop ends the server's job; the question sent meanwhile showed its place in the queue, then was answered.
        XCTAssertTrue((report["step_seen"] as? String)?.hasSuffix("of 20000") ?? false, "\(report["step_seen"] ?? "")")
        XCTAssertEqual(report["queue_shown"] as? String, "Waiting in the queue: 1 request ahead")
        XCTAssertEqual(report["stopped_status"] as? String, "Stopped.")
        XCTAssertEqual(report["cancelled_jobs"] as? Int, 1)
        // A refused value comes back in the server's words.
        XCTAssertEqual(report["refusal_shown"] as? String, "'steps' must be from 1 to 100000 (got 0)")
        for name in ["chat.png", "generate.png"] {
            let screenshot = try RGBImage(data: try Data(contentsOf: folder.appendingPathComponent(name)))
            XCTAssertEqual(screenshot.width, 1100, name)
        }
    }
}
