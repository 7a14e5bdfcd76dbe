import Foundation
import Hummingbird
import NIOCore

/// Requires `Authorization: Bearer KEY` on every path but `/health` and the web page's files (as vLLM's and llama.cpp's servers do, so
/// OpenAI's SDKs work unchanged with `api_key=KEY`); anything else gets 401 in OpenAI's error shape.
struct BearerKeyMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let key: [UInt8]

    init(key: String) { self.key = Array(key.utf8) }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path == "/health" || WebPage.serves(request.uri.path) { return try await next(request, context) }
        guard let presented = Self.bearerToken(request.headers[.authorization]) else {
            return Self.refusal("missing API key: send the header 'Authorization: Bearer KEY' (the key the server was started with)")
        }
        guard Self.constantTimeEqual(Array(presented.utf8), key) else { return Self.refusal("incorrect API key") }
        return try await next(request, context)
    }

    /// The token of a `Bearer` credential (scheme case-insensitive, surrounding spaces ignored), nil for any other.
    static func bearerToken(_ header: String?) -> Substring? {
        guard let header else { return nil }
        let value = header.drop { $0 == " " }
        guard value.count > 7, value.prefix(7).lowercased() == "bearer " else { return nil }
        let token = value.dropFirst(7).drop { $0 == " " }
        let trimmed = token.reversed().drop { $0 == " " }.count
        return token.prefix(trimmed)
    }

    /// Equality whose time depends only on the lengths, never on where the first difference is.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt(bitPattern: a.count ^ b.count)
        for i in 0..<Swift.max(a.count, b.count) {
            let x = i < a.count ? a[i] : 0, y = i < b.count ? b[i] : 0
            difference |= UInt(x ^ y)
        }
        return difference == 0
    }

    static func refusal(_ message: String) -> Response {
        var body = OpenAIErrorResponse(status: 401, message: message)
        body.error.code = "invalid_api_key"
        return Response(status: .unauthorized, headers: [.contentType: "application/json", .wwwAuthenticate: "Bearer"],
                        body: .init(byteBuffer: ByteBuffer(data: encodeJSON(body))))
    }
}

extension ServerConfiguration {
    /// Whether `host` only accepts connections from this machine.
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    /// The warning a server gives when it listens beyond loopback with no API key; nil when it is fine.
    public var exposureWarning: String? {
        guard apiKey == nil, !Self.isLoopback(host) else { return nil }
        return "warning: listening on \(host) without an API key: anyone who can reach this port can use the model (set --api-key or JANUSFLOW_API_KEY)"
    }
}
