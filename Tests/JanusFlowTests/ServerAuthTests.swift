import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowServer
import XCTest

/// `serve --api-key`: every endpoint but /health wants `Authorization: Bearer KEY`, over real sockets.
final class ServerAuthTests: XCTestCase {
    static let key = "sk-test-0123456789"
    static let server = RunningServer(JanusFlowServer(pipeline: PipelineTests.pipeline,
                                                      configuration: ServerConfiguration(port: 0, apiKey: ServerAuthTests.key)))

    func fetch(_ method: String, _ path: String, authorization: String?, body: [String: Any]? = nil) throws -> HTTPReply {
        var headers: [String: String] = [:]
        if let authorization { headers["Authorization"] = authorization }
        return try HTTPReply.fetch(port: Self.server.port(), method: method, path: path, headers: headers,
                                   body: try body.map { try JSONSerialization.data(withJSONObject: $0) })
    }

    func assertRefused(_ reply: HTTPReply, _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(reply.status, 401, file: file, line: line)
        XCTAssertEqual(reply.headers["www-authenticate"], "Bearer", file: file, line: line)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: reply.body) as? [String: Any], file: file, line: line)
        let error = try XCTUnwrap(object["error"] as? [String: Any], "\(object)", file: file, line: line)
        XCTAssertEqual(error["message"] as? String, message, file: file, line: line)
        XCTAssertEqual(error["type"] as? String, "authentication_error", file: file, line: line)
        XCTAssertEqual(error["code"] as? String, "invalid_api_key", file: file, line: line)
        XCTAssertTrue(error.keys.contains("param"), file: file, line: line)
    }

    func testEveryEndpointButHealthWantsTheKey() throws {
        let missing = "missing API key: send the header 'Authorization: Bearer KEY' (the key the server was started with)"
        let png = try RGBImage(width: 20, height: 20, fill: (20, 200, 30)).pngData().base64EncodedString()
        let question: [String: Any] = ["image": png, "question": "what?", "max_tokens": 2]
        for (method, path, body) in [("GET", "/v1/models", nil), ("POST", "/v1/understand", question), ("POST", "/v1/generate", ["prompt": "x", "steps": 1]),
                                     ("POST", "/v1/chat/completions", ["messages": [["role": "user", "content": "hi"]]]),
                                     ("POST", "/v1/images/generations", ["prompt": "x"]), ("GET", "/no/such/path", nil)] as [(String, String, [String: Any]?)] {
            try assertRefused(try fetch(method, path, authorization: nil, body: body), missing)
            try assertRefused(try fetch(method, path, authorization: "Bearer sk-test-0123456788", body: body), "incorrect API key")
            try assertRefused(try fetch(method, path, authorization: "Bearer \(Self.key)x", body: body), "incorrect API key")
            try assertRefused(try fetch(method, path, authorization: "Basic \(Self.key)", body: body), missing)
        }
        XCTAssertEqual(try fetch("GET", "/health", authorization: nil).status, 200)

        // With the key (scheme in any case, as OpenAI's SDKs and curl send it) the request goes through.
        let models = try fetch("GET", "/v1/models", authorization: "Bearer \(Self.key)")
        XCTAssertEqual(models.status, 200)
        XCTAssertEqual(try fetch("GET", "/v1/models", authorization: "bearer  \(Self.key) ").status, 200)
        let answer = try fetch("POST", "/v1/understand", authorization: "Bearer \(Self.key)", body: question)
        XCTAssertEqual(answer.status, 200, String(decoding: answer.body, as: UTF8.self))
        XCTAssertEqual(try fetch("GET", "/no/such/path", authorization: "Bearer \(Self.key)").status, 404)
    }

    func testExposureWarning() {
        XCTAssertNil(ServerConfiguration(host: "127.0.0.1").exposureWarning)
        XCTAssertNil(ServerConfiguration(host: "localhost").exposureWarning)
        XCTAssertNil(ServerConfiguration(host: "0.0.0.0", apiKey: "k").exposureWarning)
        XCTAssertEqual(ServerConfiguration(host: "0.0.0.0").exposureWarning,
                       "warning: listening on 0.0.0.0 without an API key: anyone who can reach this port can use the model (set --api-key or JANUSFLOW_API_KEY)")
    }
}

/// The CLI side: the flag, the environment variable, an empty key refused, the warning beyond loopback.
final class ServeAPIKeyCommandTests: XCTestCase {
    /// Starts `janusflow serve` with `arguments` and `environment`, waits for its address, runs `body`, stops it.
    func withServer(_ arguments: [String], environment: [String: String] = [:], _ body: (Int, String) throws -> Void) throws {
        guard FileManager.default.fileExists(atPath: cliBinary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("serve-key-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let process = Process()
        process.executableURL = cliBinary
        process.arguments = ["serve", "--model", tinyFixture.appendingPathComponent("model").path, "--dtype", "float32", "--port", "0"] + arguments
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "JANUSFLOW_API_KEY")
        process.environment = env.merging(environment) { _, new in new }
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardOutput = try FileHandle(forWritingTo: log)
        try process.run()
        defer { process.terminate(); process.waitUntilExit() }
        var port: Int?
        var text = ""
        for _ in 0..<600 where port == nil {
            text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if let range = text.range(of: #"serving on http://[0-9.]+:(\d+)"#, options: .regularExpression) {
                port = Int(text[range].split(separator: ":").last!)
            } else {
                usleep(100_000)
            }
        }
        try body(try XCTUnwrap(port, "no address printed: \(text)"), text)
    }

    func testKeyFromFlagOrEnvironment() throws {
        try withServer(["--api-key", "flag-key"]) { port, log in
            XCTAssertTrue(log.contains("API key required"), log)
            XCTAssertEqual(try HTTPReply.fetch(port: port, method: "GET", path: "/v1/models").status, 401)
            XCTAssertEqual(try HTTPReply.fetch(port: port, method: "GET", path: "/v1/models", headers: ["Authorization": "Bearer flag-key"]).status, 200)
        }
        try withServer([], environment: ["JANUSFLOW_API_KEY": "env-key"]) { port, _ in
            XCTAssertEqual(try HTTPReply.fetch(port: port, method: "GET", path: "/v1/models", headers: ["Authorization": "Bearer flag-key"]).status, 401)
            XCTAssertEqual(try HTTPReply.fetch(port: port, method: "GET", path: "/v1/models", headers: ["Authorization": "Bearer env-key"]).status, 200)
        }
        // Beyond loopback without a key: served, with the warning.
        try withServer(["--host", "0.0.0.0"]) { port, log in
            XCTAssertTrue(log.contains("warning: listening on 0.0.0.0 without an API key"), log)
            XCTAssertEqual(try HTTPReply.fetch(port: port, method: "GET", path: "/v1/models").status, 200)
        }
        let empty = try runCLI(["serve", "--model", tinyFixture.appendingPathComponent("model").path, "--api-key", ""])
        XCTAssertNotEqual(empty.status, 0)
        XCTAssertTrue(empty.error.contains("--api-key must not be empty"), empty.error)
    }
}
