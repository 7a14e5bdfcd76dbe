import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowServer
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The HTTP server over real sockets on the tiny fixture model, its answers compared with the library's.
final class ServerTests: XCTestCase {
    static let server = RunningServer(JanusFlowServer(pipeline: PipelineTests.pipeline, configuration: ServerConfiguration(port: 0)))
    var pipeline: JanusFlowPipeline { PipelineTests.pipeline }
    let image = RGBImage(width: 30, height: 20, fill: (200, 30, 30))

    func post(_ path: String, _ object: [String: Any], server: RunningServer = ServerTests.server, headers: [String: String] = [:]) throws -> HTTPReply {
        try HTTPReply.fetch(port: server.port(), method: "POST", path: path, headers: headers,
                            body: try JSONSerialization.data(withJSONObject: object))
    }

    func json(_ reply: HTTPReply) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: reply.body) as? [String: Any], String(decoding: reply.body, as: UTF8.self))
    }

    func testHealth() throws {
        let reply = try HTTPReply.fetch(port: Self.server.port(), method: "GET", path: "/health")
        XCTAssertEqual(reply.status, 200)
        XCTAssertEqual(reply.headers["content-type"], "application/json")
        let body = try json(reply)
        XCTAssertEqual(body["status"] as? String, "ok")
        XCTAssertEqual(body["image_size"] as? Int, pipeline.imageSize)
        XCTAssertEqual(body["generation"] as? Bool, true)
        XCTAssertEqual(body["max_queued"] as? Int, 8)
    }

    func testUnderstandAnswersAsTheLibraryDoes() throws {
        let png = try image.pngData().base64EncodedString()
        let parameters = SamplingParameters(temperature: 0.8, topP: 0.9, maxNewTokens: 6, seed: 3)
        let expected = try pipeline.answer(image: image, question: "what is it?", parameters: parameters)

        let reply = try post("/v1/understand", ["image": png, "question": "what is it?", "max_tokens": 6, "temperature": 0.8, "top_p": 0.9, "seed": 3])
        XCTAssertEqual(reply.status, 200)
        let body = try json(reply)
        XCTAssertEqual(body["answer"] as? String, expected.text)
        XCTAssertEqual(body["tokens"] as? Int, expected.tokenCount)
        XCTAssertEqual(body["finish_reason"] as? String, expected.ending.rawValue)

        // Streamed: text events that add up to the answer, then the full result.
        let streamed = try post("/v1/understand", ["image": png, "question": "what is it?", "max_tokens": 6, "temperature": 0.8, "top_p": 0.9,
                                                   "seed": 3, "stream": true])
        XCTAssertEqual(streamed.headers["content-type"], "text/event-stream")
        let events = try streamed.events()
        let pieces = events.dropLast().map { $0["text"] as? String }
        XCTAssertFalse(pieces.isEmpty)
        XCTAssertTrue(pieces.allSatisfy { $0 != nil })
        XCTAssertEqual(pieces.map { $0! }.joined().trimmingCharacters(in: .whitespacesAndNewlines), expected.text)
        XCTAssertEqual(events.last?["done"] as? Bool, true)
        XCTAssertEqual(events.last?["answer"] as? String, expected.text)

        // The image as a data URL, as a browser reads a file.
        let dataURL = try post("/v1/understand", ["image": "data:image/png;base64," + png, "question": "what is it?", "max_tokens": 6,
                                                  "temperature": 0.8, "top_p": 0.9, "seed": 3])
        XCTAssertEqual(try json(dataURL)["answer"] as? String, expected.text)
    }

    func promptCacheCounts() throws -> [Int] {
        let health = try json(try HTTPReply.fetch(port: Self.server.port(), method: "GET", path: "/health"))
        let cache = try XCTUnwrap(health["prompt_cache"] as? [String: Int], "\(health)")
        return [cache["hits"] ?? -1, cache["misses"] ?? -1]
    }

    func testGenerateReturnsTheLibrarysImages() throws {
        let expected = try pipeline.generate(prompt: "a red circle", count: 2, steps: 2, seed: 7)
        let before = try promptCacheCounts()
        let reply = try post("/v1/generate", ["prompt": "a red circle", "count": 2, "steps": 2, "seed": 7])
        XCTAssertEqual(reply.status, 200)
        // The prompt's keys/values the library call kept: found, not computed again.
        XCTAssertEqual(try promptCacheCounts(), [before[0] + 1, before[1]])
        let body = try json(reply)
        let images = try XCTUnwrap(body["images"] as? [String]).map { try RGBImage(data: Data(base64Encoded: $0)!) }
        XCTAssertEqual(images, expected)
        XCTAssertEqual(body["width"] as? Int, pipeline.imageSize)
        XCTAssertEqual(body["seed"] as? String, "7")

        // One image as a PNG body; a seed above 2^53 as a string.
        let big: UInt64 = 18_000_000_000_000_000_001
        let png = try post("/v1/generate", ["prompt": "a red circle", "steps": 2, "seed": String(big)], headers: ["Accept": "image/png"])
        XCTAssertEqual(png.status, 200)
        XCTAssertEqual(png.headers["content-type"], "image/png")
        XCTAssertEqual(try RGBImage(data: png.body), try pipeline.generate(prompt: "a red circle", steps: 2, seed: big)[0])

        // Streamed: one event per step (0 is the start), then the images.
        let streamed = try post("/v1/generate", ["prompt": "a red circle", "count": 2, "steps": 2, "seed": 7, "stream": true])
        let events = try streamed.events()
        XCTAssertEqual(events.dropLast().map { $0["step"] as? Int }, [0, 1, 2])
        XCTAssertEqual(events.dropLast().map { $0["steps"] as? Int }, [2, 2, 2])
        let final = try XCTUnwrap(events.last)
        XCTAssertEqual(final["done"] as? Bool, true)
        XCTAssertEqual(try XCTUnwrap(final["images"] as? [String]).map { try RGBImage(data: Data(base64Encoded: $0)!) }, expected)
    }

    func testBadRequestsNameTheirField() throws {
        let png = try image.pngData().base64EncodedString()
        let cases: [(String, [String: Any], Int, String)] = [
            ("/v1/generate", ["prompt": "x", "temprature": 1], 400, "unknown field 'temprature' (fields: prompt, count, steps, cfg, seed, noise, stream)"),
            ("/v1/generate", ["prompt": "x", "count": 0], 400, "'count' must be from 1 to 8 (got 0)"),
            ("/v1/generate", ["prompt": "x", "steps": 2.5], 400, "'steps' must be an integer"),
            ("/v1/generate", ["prompt": "x", "cfg": 0.5], 400, "'cfg' must be from 1 to 100 (got 0.5)"),
            ("/v1/generate", ["prompt": "x", "noise": "perlin"], 400, "'noise' must be one of mlx, torch (got 'perlin')"),
            ("/v1/generate", ["prompt": "x", "stream": "yes"], 400, "'stream' must be true or false"),
            ("/v1/generate", ["prompt": "x", "seed": -1], 400, "'seed' must be a non-negative integer (or a decimal string for values above 2^53)"),
            ("/v1/generate", ["count": 1], 400, "'prompt' is required"),
            ("/v1/generate", ["prompt": "  "], 400, "'prompt' must not be empty"),
            ("/v1/understand", ["question": "q"], 400, "'image' is required"),
            ("/v1/understand", ["image": png], 400, "'question' is required"),
            ("/v1/understand", ["image": "***", "question": "q"], 400, "'image' must be a PNG or JPEG file encoded as base64"),
            ("/v1/understand", ["image": Data("GIF89a....".utf8).base64EncodedString(), "question": "q"], 400,
             "'image': not a PNG or JPEG file (GIF image)"),
            ("/v1/understand", ["image": png, "question": "q", "max_tokens": 5000], 400, "'max_tokens' must be from 1 to 2048 (got 5000)"),
            ("/v1/understand", ["image": png, "question": "q", "history": [["role": "system", "content": "hi"]]], 400,
             "'history[0].role' must be 'user' or 'assistant' (got 'system')"),
            ("/v1/understand", ["image": png, "question": "q", "stream": true, "history": [["role": "user", "content": "<image_placeholder>\nq"],
                                                                                           ["role": "assistant", "content": "a"]]], 400,
             "the conversation has 2 image tags for 1 image"),
            ("/v1/understand", ["image": png, "question": "q", "history": [["role": "user", "content": "q"]]], 400,
             "message 1 is from 'User' where the conversation expects Assistant (turns alternate, starting with User)"),
        ]
        for (path, body, status, message) in cases {
            let reply = try post(path, body)
            XCTAssertEqual(reply.status, status, "\(body)")
            XCTAssertEqual(try json(reply)["error"] as? String, message)
        }
        let port = try Self.server.port()
        for (raw, message) in [("", "the request body is empty (expected a JSON object)"), ("[1]", "the request body must be a JSON object"),
                               ("{bad", "the request body is not valid JSON")] {
            let reply = try HTTPReply.fetch(port: port, method: "POST", path: "/v1/generate", body: Data(raw.utf8))
            XCTAssertEqual(reply.status, 400)
            XCTAssertEqual(try json(reply)["error"] as? String, message)
        }
        let twoAsPNG = try post("/v1/generate", ["prompt": "x", "count": 2], headers: ["Accept": "image/png"])
        XCTAssertEqual(try json(twoAsPNG)["error"] as? String, "'Accept: image/png' returns one image without streaming; ask for count 1, or accept JSON")
        let unknown = try HTTPReply.fetch(port: port, method: "GET", path: "/v1/nothing")
        XCTAssertEqual(unknown.status, 404)
        XCTAssertEqual(try json(unknown)["error"] as? String,
                       "no endpoint GET /v1/nothing (endpoints: GET / (the web page), GET /health, POST /v1/understand, POST /v1/generate, POST /v1/chat/completions, POST /v1/images/generations, GET /v1/models)")
    }

    func testLimitsAndAServerWithoutVAE() throws {
        let noVAE = try JanusFlowPipeline(model: pipeline.model, vae: nil, tokenizer: pipeline.tokenizer)
        let server = RunningServer(JanusFlowServer(pipeline: noVAE, configuration: ServerConfiguration(port: 0, maxBodyBytes: 1000)))
        let off = try post("/v1/generate", ["prompt": "x"], server: server)
        XCTAssertEqual(off.status, 501)
        XCTAssertEqual(try json(off)["error"] as? String, "image generation is off: the server was started without a VAE folder (--vae)")
        let big = try post("/v1/understand", ["image": String(repeating: "A", count: 2000), "question": "q"], server: server)
        XCTAssertEqual(big.status, 413)
        XCTAssertEqual(try json(big)["error"] as? String, "the request body is larger than the server's limit of 1000 bytes (--max-body-mb)")
        let health = try json(try HTTPReply.fetch(port: server.port(), method: "GET", path: "/health"))
        XCTAssertEqual(health["generation"] as? Bool, false)
    }

    /// A client that sends part of its body and then nothing gets 408 when the request timeout passes.
    func testASlowBodyTimesOut() throws {
        let server = RunningServer(JanusFlowServer(pipeline: pipeline, configuration: ServerConfiguration(port: 0, requestTimeout: 0.5)))
        let started = Date()
        let slow = try HTTPStream(port: try server.port(), method: "POST", path: "/v1/generate", body: Data(#"{"prompt": "a"#.utf8),
                                  declaredLength: 100)
        XCTAssertEqual(slow.status, 408)
        let reply = try XCTUnwrap(JSONSerialization.jsonObject(with: try slow.readBody()) as? [String: Any])
        XCTAssertEqual(reply["error"] as? String, "the request body did not arrive within 0.5 s (--request-timeout)")
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
    }

    /// One job runs at a time; with no room to wait a second request is refused, and a client that hangs up
    /// mid-stream stops its job.
    func testBusyServerRefusesAndAHungUpStreamIsCancelled() throws {
        let server = RunningServer(JanusFlowServer(pipeline: pipeline, configuration: ServerConfiguration(port: 0, maxQueued: 0, maxSteps: 100_000)))
        let port = try server.port()
        let body = try JSONSerialization.data(withJSONObject: ["prompt": "a red circle", "steps": 100_000, "stream": true])
        let stream = try HTTPStream(port: port, method: "POST", path: "/v1/generate", body: body)
        let first = try stream.nextEvent()
        XCTAssertEqual(first["step"] as? Int, 0)

        let busy = try post("/v1/generate", ["prompt": "x", "steps": 1], server: server)
        XCTAssertEqual(busy.status, 503)
        XCTAssertEqual(try json(busy)["error"] as? String, "the server is busy (1 request ahead); try again later")

        stream.close()
        var health: [String: Any] = [:]
        for _ in 0..<600 {
            health = try json(try HTTPReply.fetch(port: port, method: "GET", path: "/health"))
            if health["queued"] as? Int == 0 { break }
            usleep(50_000)
        }
        XCTAssertEqual(health["queued"] as? Int, 0, "the hung-up job never stopped")
        XCTAssertEqual(health["cancelled"] as? Int, 1)
        XCTAssertEqual(health["completed"] as? Int, 0)
        let after = try post("/v1/generate", ["prompt": "x", "steps": 1], server: server)
        XCTAssertEqual(after.status, 200)
        XCTAssertEqual(try json(try HTTPReply.fetch(port: port, method: "GET", path: "/health"))["completed"] as? Int, 1)
    }
}

/// A server running in this process for the tests' lifetime, on a free port.
final class RunningServer: @unchecked Sendable {
    private let lock = NSCondition()
    private var boundPort: Int?
    private var failure: String?

    init(_ server: JanusFlowServer) {
        Task.detached {
            do {
                try await server.run { port in self.finish(port: port, failure: nil) }
            } catch {
                self.finish(port: nil, failure: "\(error)")
            }
        }
    }

    private func finish(port: Int?, failure: String?) {
        lock.lock()
        boundPort = port
        self.failure = failure
        lock.broadcast()
        lock.unlock()
    }

    func port() throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        let deadline = Date().addingTimeInterval(30)
        while boundPort == nil && failure == nil && lock.wait(until: deadline) {}
        if let failure { throw HTTPTestError("the server did not start: \(failure)") }
        guard let boundPort else { throw HTTPTestError("the server did not start within 30 s") }
        return boundPort
    }
}

struct HTTPTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A blocking HTTP/1.1 connection to 127.0.0.1 (chunked bodies decoded), enough to test the server byte for byte.
final class HTTPStream {
    private let socket: Int32
    private var buffer: [UInt8] = []
    private(set) var status = 0
    private(set) var headers: [String: String] = [:]
    private var chunked = false
    private var remainingInChunk = 0
    private var body: [UInt8] = []

    /// `declaredLength`: the Content-Length to send when it is not the body's (a client that never sends the rest).
    init(port: Int, method: String, path: String, headers extra: [String: String] = [:], body: Data? = nil,
         declaredLength: Int? = nil) throws {
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw HTTPTestError("socket() failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw HTTPTestError("cannot connect to port \(port)") }
        var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (name, value) in extra { request += "\(name): \(value)\r\n" }
        if let body { request += "Content-Type: application/json\r\nContent-Length: \(declaredLength ?? body.count)\r\n" }
        request += "\r\n"
        try send(Array(request.utf8) + Array(body ?? Data()))
        try readHead()
    }

    deinit { close() }

    private var closed = false
    func close() {
        if !closed { Glibc.close(socket) }
        closed = true
    }

    private func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw HTTPTestError("send failed") }
            sent += n
        }
    }

    /// More bytes from the socket; false at the end of the connection.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
        guard n >= 0 else { throw HTTPTestError("recv failed") }
        buffer += chunk[..<n]
        return n > 0
    }

    private func line() throws -> String? {
        while true {
            if let i = buffer.firstIndex(of: 10) {
                let text = String(decoding: buffer[..<i], as: UTF8.self).trimmingCharacters(in: .newlines)
                buffer.removeFirst(i + 1)
                return text
            }
            guard try fill() else { return nil }
        }
    }

    private func readHead() throws {
        guard let statusLine = try line(), statusLine.hasPrefix("HTTP/1.1 ") else { throw HTTPTestError("no status line") }
        status = Int(statusLine.split(separator: " ")[1]) ?? 0
        while let header = try line(), !header.isEmpty {
            let parts = header.split(separator: ":", maxSplits: 1)
            headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces)
        }
        chunked = headers["transfer-encoding"]?.contains("chunked") ?? false
    }

    /// The next body bytes as they arrive (chunk framing removed); nil at the end.
    private func nextBodyBytes() throws -> [UInt8]? {
        guard chunked else {
            if buffer.isEmpty, try !fill() { return nil }
            defer { buffer.removeAll() }
            return buffer
        }
        if remainingInChunk == 0 {
            guard let size = try line(), let n = Int(size, radix: 16) else { return nil }
            if n == 0 { return nil }
            remainingInChunk = n
        }
        while buffer.isEmpty { guard try fill() else { return nil } }
        let take = min(remainingInChunk, buffer.count)
        let bytes = Array(buffer.prefix(take))
        buffer.removeFirst(take)
        remainingInChunk -= take
        if remainingInChunk == 0 { _ = try line() }
        return bytes
    }

    func readBody() throws -> Data {
        while let bytes = try nextBodyBytes() { body += bytes }
        return Data(body)
    }

    /// The next server-sent event's text as sent (`data: ...` or a `: comment`).
    func nextRawEvent() throws -> String {
        while true {
            if let end = findEventEnd() {
                let text = String(decoding: body[..<end], as: UTF8.self)
                body.removeFirst(end + 2)
                return text
            }
            guard let bytes = try nextBodyBytes() else { throw HTTPTestError("the stream ended without another event") }
            body += bytes
        }
    }

    /// The next server-sent event's JSON object.
    func nextEvent() throws -> [String: Any] {
        while true {
            if let end = findEventEnd() {
                let text = String(decoding: body[..<end], as: UTF8.self)
                body.removeFirst(end + 2)
                guard text.hasPrefix("data: "), let object = try JSONSerialization.jsonObject(with: Data(text.dropFirst(6).utf8)) as? [String: Any] else {
                    throw HTTPTestError("not a JSON event: \(text)")
                }
                return object
            }
            guard let bytes = try nextBodyBytes() else { throw HTTPTestError("the stream ended without another event") }
            body += bytes
        }
    }

    private func findEventEnd() -> Int? {
        guard body.count >= 2 else { return nil }
        for i in 0..<(body.count - 1) where body[i] == 10 && body[i + 1] == 10 { return i }
        return nil
    }
}

struct HTTPReply {
    var status: Int
    var headers: [String: String]
    var body: Data

    static func fetch(port: Int, method: String, path: String, headers: [String: String] = [:], body: Data? = nil) throws -> HTTPReply {
        let connection = try HTTPStream(port: port, method: method, path: path, headers: headers, body: body)
        return HTTPReply(status: connection.status, headers: connection.headers, body: try connection.readBody())
    }

    /// The body's server-sent events, each `data: {json}` followed by a blank line.
    func events() throws -> [[String: Any]] {
        try String(decoding: body, as: UTF8.self).components(separatedBy: "\n\n").filter { !$0.isEmpty }.map { event in
            guard event.hasPrefix("data: "), let object = try JSONSerialization.jsonObject(with: Data(event.dropFirst(6).utf8)) as? [String: Any] else {
                throw HTTPTestError("not a JSON event: \(event)")
            }
            return object
        }
    }
}

/// `janusflow serve` as a user starts it: it prints its address, answers, and stops cleanly on SIGTERM.
final class ServeCommandTests: XCTestCase {
    func testServeStartsAnswersAndStopsOnSIGTERM() throws {
        guard FileManager.default.fileExists(atPath: cliBinary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let model = tinyFixture.appendingPathComponent("model").path
        let bad = try runCLI(["serve", "--model", model, "--port", "70000"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.error.contains("--port must be from 0 to 65535 (got 70000)"), bad.error)

        let log = FileManager.default.temporaryDirectory.appendingPathComponent("serve-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let process = Process()
        process.executableURL = cliBinary
        process.arguments = ["serve", "--model", model, "--dtype", "float32", "--port", "0"]
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.interrupt() } }

        var port: Int?
        for _ in 0..<600 where port == nil {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if let range = text.range(of: #"serving on http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(text[range].split(separator: ":").last!)
            } else {
                usleep(100_000)
            }
        }
        let bound = try XCTUnwrap(port, "no address printed: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        let health = try HTTPReply.fetch(port: bound, method: "GET", path: "/health")
        XCTAssertEqual(health.status, 200)
        let body = try XCTUnwrap(try JSONSerialization.jsonObject(with: health.body) as? [String: Any])
        XCTAssertEqual(body["model"] as? String, "model")
        XCTAssertEqual(body["generation"] as? Bool, false)

        process.terminate()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .exit)
        XCTAssertEqual(process.terminationStatus, 0)
    }
}
