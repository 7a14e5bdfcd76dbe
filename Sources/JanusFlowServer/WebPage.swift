import Foundation
import Hummingbird
import HTTPTypes
import NIOCore

/// The page at `/` (chat about pictures, image generation) and its two files under `/web/`: plain HTML, CSS and
/// JavaScript shipped as the target's resources, read once and served from memory. The page calls the server's own
/// endpoints only, and its Content-Security-Policy forbids anything from elsewhere, so it works offline.
struct WebPage: Sendable {
    struct File: Sendable {
        let contentType: String
        let bytes: Data
    }

    /// Path served -> file; nil when the resource folder was not found (then `/` says where it was looked for).
    let files: [String: File]?
    let searched: [String]

    static let names: [(path: String, file: String, type: String)] = [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/web/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/web/style.css", "style.css", "text/css; charset=utf-8"),
    ]

    static let policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    /// Whether `path` is one of the page's (served without an API key: it holds nothing secret, and a browser
    /// cannot send a bearer header when it opens a page).
    static func serves(_ path: String) -> Bool { names.contains { $0.path == path } || path == "/index.html" }

    /// The page's folder: `$JANUSFLOW_WEB_ROOT` if set, else the resource bundle SwiftPM builds beside the executable
    /// (`JanusFlow_JanusFlowServer.resources/Web`).
    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        var candidates: [URL] = []
        if let root = environment["JANUSFLOW_WEB_ROOT"], !root.isEmpty { candidates.append(URL(fileURLWithPath: root)) }
        if let executable = Bundle.main.executableURL?.resolvingSymlinksInPath() {
            candidates.append(executable.deletingLastPathComponent().appendingPathComponent("JanusFlow_JanusFlowServer.resources/Web"))
        }
        searched = candidates.map(\.path)
        for folder in candidates {
            var found: [String: File] = [:]
            for name in Self.names {
                guard let bytes = try? Data(contentsOf: folder.appendingPathComponent(name.file)) else { break }
                found[name.path] = File(contentType: name.type, bytes: bytes)
            }
            if found.count == Self.names.count {
                files = found
                return
            }
        }
        files = nil
    }

    func response(for path: String) -> Response {
        let key = path == "/index.html" ? "/" : path
        guard let files else {
            let message = "the web page's files (index.html, app.js, style.css) were not found in \(searched.joined(separator: " or ")); "
                + "set JANUSFLOW_WEB_ROOT to the folder Sources/JanusFlowServer/Web"
            return Response(status: .notFound, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(data: encodeJSON(ErrorResponse(error: message)))))
        }
        guard let file = files[key] else {
            return Response(status: .notFound, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(data: encodeJSON(ErrorResponse(error: "no page file \(path)")))))
        }
        var headers: HTTPFields = [.contentType: file.contentType, .cacheControl: "no-cache"]
        headers[HTTPField.Name("Content-Security-Policy")!] = Self.policy
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(data: file.bytes)))
    }
}
