import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowTokenizer

/// A request the server refuses: the HTTP status and a message that names the field or limit at fault.
public struct APIError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The HTTP status code to answer with.
    public let status: Int
    /// What is wrong, naming the field or limit.
    public let message: String
    /// Creates an error with an HTTP `status` and `message`.
    public init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }
    /// The message.
    public var description: String { message }

    static func badRequest(_ message: String) -> APIError { APIError(400, message) }
}

/// The JSON object of a request body, read field by field so that every error names its field and unknown fields
/// (a misspelt `temprature`) are refused rather than silently ignored.
struct RequestFields {
    private let values: [String: JSONField]

    init(body: Data, allowed: [String]) throws {
        guard !body.isEmpty else { throw APIError.badRequest("the request body is empty (expected a JSON object)") }
        let decoded: [String: JSONField]
        do {
            decoded = try JSONDecoder().decode([String: JSONField].self, from: body)
        } catch DecodingError.typeMismatch {
            throw APIError.badRequest("the request body must be a JSON object")
        } catch {
            throw APIError.badRequest("the request body is not valid JSON")
        }
        let unknown = decoded.keys.filter { !allowed.contains($0) }.sorted()
        if let first = unknown.first {
            throw APIError.badRequest("unknown field '\(first)' (fields: \(allowed.joined(separator: ", ")))")
        }
        values = decoded
    }

    func value(_ name: String) -> JSONField? {
        guard let v = values[name], v != .null else { return nil }
        return v
    }

    func string(_ name: String) throws -> String? {
        guard let v = value(name) else { return nil }
        guard case .string(let s) = v else { throw APIError.badRequest("'\(name)' must be a string") }
        return s
    }

    func requiredString(_ name: String) throws -> String {
        guard let s = try string(name) else { throw APIError.badRequest("'\(name)' is required") }
        guard !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw APIError.badRequest("'\(name)' must not be empty") }
        return s
    }

    func bool(_ name: String) throws -> Bool? {
        guard let v = value(name) else { return nil }
        guard case .bool(let b) = v else { throw APIError.badRequest("'\(name)' must be true or false") }
        return b
    }

    func number(_ name: String, in range: ClosedRange<Double>) throws -> Double? {
        guard let v = value(name) else { return nil }
        guard case .number(let d) = v else { throw APIError.badRequest("'\(name)' must be a number") }
        guard range.contains(d) else { throw APIError.badRequest("'\(name)' must be from \(format(range.lowerBound)) to \(format(range.upperBound)) (got \(format(d)))") }
        return d
    }

    func integer(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let v = value(name) else { return nil }
        guard case .number(let d) = v, d.rounded() == d, abs(d) < 9e15 else { throw APIError.badRequest("'\(name)' must be an integer") }
        guard range.contains(Int(d)) else { throw APIError.badRequest("'\(name)' must be from \(range.lowerBound) to \(range.upperBound) (got \(Int(d)))") }
        return Int(d)
    }

    /// Seeds are unsigned 64-bit, beyond what a JSON number holds exactly, so a decimal string is accepted too.
    func seed(_ name: String) throws -> UInt64? {
        guard let v = value(name) else { return nil }
        switch v {
        case .number(let d) where d >= 0 && d.rounded() == d && d < 9e15: return UInt64(d)
        case .string(let s) where UInt64(s) != nil: return UInt64(s)!
        default: throw APIError.badRequest("'\(name)' must be a non-negative integer (or a decimal string for values above 2^53)")
        }
    }

    func messages(_ name: String) throws -> [ChatMessage] {
        guard let v = value(name) else { return [] }
        guard case .array(let items) = v else { throw APIError.badRequest("'\(name)' must be an array of {\"role\", \"content\"} objects") }
        return try items.enumerated().map { i, item in
            guard case .object(let fields) = item, case .string(let role)? = fields["role"], case .string(let content)? = fields["content"],
                  fields.count == 2 else {
                throw APIError.badRequest("'\(name)[\(i)]' must be an object with string fields 'role' and 'content' only")
            }
            switch role.lowercased() {
            case "user": return .user(content)
            case "assistant": return .assistant(content)
            default: throw APIError.badRequest("'\(name)[\(i)].role' must be 'user' or 'assistant' (got '\(role)')")
            }
        }
    }

    private func format(_ d: Double) -> String { d.rounded() == d && abs(d) < 1e15 ? String(Int(d)) : String(d) }
}

extension RequestFields {
    /// The sampling fields both chat endpoints take; unset ones keep greedy decoding's values.
    func sampling(maxTokens: Int?, maxNewTokens: Int, temperatures: ClosedRange<Double>) throws -> SamplingParameters {
        SamplingParameters(
            temperature: try number("temperature", in: temperatures) ?? 0,
            topP: try number("top_p", in: 0.000001...1) ?? 1,
            topK: try integer("top_k", in: 0...1_000_000) ?? 0,
            repetitionPenalty: try number("repetition_penalty", in: 0.01...100) ?? 1,
            maxNewTokens: maxTokens ?? Swift.min(512, maxNewTokens),
            seed: try seed("seed") ?? 42)
    }
}

/// The bytes of base64 text, or of a `data:...;base64,` URL (what a browser's FileReader gives); nil if neither.
func base64Payload(_ text: String, dataURLOnly: Bool) -> Data? {
    var encoded = Substring(text)
    if text.hasPrefix("data:"), let comma = text.firstIndex(of: ","), text[..<comma].hasSuffix(";base64") {
        encoded = text[text.index(after: comma)...]
    } else if dataURLOnly {
        return nil
    }
    return Data(base64Encoded: String(encoded), options: .ignoreUnknownCharacters)
}

/// A PNG or JPEG file sent in a request; `field` names it in the error.
func decodeImage(_ bytes: Data, field: String) throws -> RGBImage {
    do {
        return try RGBImage(data: bytes, name: field)
    } catch let error as ImageError {
        throw APIError.badRequest(error.message)
    }
}

/// Any JSON value (JSONDecoder tells booleans from numbers, which JSONSerialization on Linux does not).
enum JSONField: Decodable, Equatable {
    case null, bool(Bool), number(Double), string(String), array([JSONField]), object([String: JSONField])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONField].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONField].self)) }
    }
}

/// `POST /v1/understand`: a question about one image.
struct UnderstandRequest {
    static let fields = ["image", "question", "history", "max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed", "stream"]

    var image: RGBImage
    var question: String
    var history: [ChatMessage]
    var parameters: SamplingParameters
    var stream: Bool

    init(body: Data, maxNewTokens: Int) throws {
        let f = try RequestFields(body: body, allowed: Self.fields)
        question = try f.requiredString("question")
        let encoded = try f.requiredString("image")
        guard let bytes = base64Payload(encoded, dataURLOnly: false) else {
            throw APIError.badRequest("'image' must be a PNG or JPEG file encoded as base64")
        }
        image = try decodeImage(bytes, field: "'image'")
        history = try f.messages("history")
        parameters = try f.sampling(maxTokens: f.integer("max_tokens", in: 1...maxNewTokens), maxNewTokens: maxNewTokens, temperatures: 0...100)
        stream = try f.bool("stream") ?? false
    }
}

/// `POST /v1/generate`: images from a prompt.
struct GenerateRequest {
    static let fields = ["prompt", "count", "steps", "cfg", "seed", "noise", "stream"]

    var prompt: String
    var count: Int
    var steps: Int
    var cfg: Double
    var seed: UInt64
    var noise: NoiseSource
    var stream: Bool

    init(body: Data, maxImages: Int, maxSteps: Int) throws {
        try self.init(fields: try RequestFields(body: body, allowed: Self.fields), countField: "count", maxImages: maxImages, maxSteps: maxSteps)
    }

    /// From fields already read (the OpenAI endpoint names the count `n`).
    init(fields f: RequestFields, countField: String, maxImages: Int, maxSteps: Int) throws {
        prompt = try f.requiredString("prompt")
        count = try f.integer(countField, in: 1...maxImages) ?? 1
        steps = try f.integer("steps", in: 1...maxSteps) ?? Swift.min(30, maxSteps)
        cfg = try f.number("cfg", in: 1...100) ?? 2
        seed = try f.seed("seed") ?? 12345
        let noiseName = try f.string("noise") ?? NoiseSource.mlx.rawValue
        guard let source = NoiseSource(rawValue: noiseName) else {
            throw APIError.badRequest("'noise' must be one of \(NoiseSource.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(noiseName)')")
        }
        noise = source
        stream = try f.bool("stream") ?? false
    }
}

/// Response bodies (snake_case keys, as the requests).
struct UnderstandResponse: Encodable {
    var answer: String
    var tokens: Int
    var finishReason: String
    var seconds: Double
    enum CodingKeys: String, CodingKey { case answer, tokens, finishReason = "finish_reason", seconds }
}

struct GenerateResponse: Encodable {
    var images: [String]
    var width: Int
    var height: Int
    var seed: String
    var seconds: Double
}

struct HealthResponse: Encodable {
    var status: String
    var model: String
    var imageSize: Int
    var generation: Bool
    var queued: Int
    var maxQueued: Int
    var completed: Int
    var cancelled: Int
    /// Generation prompts whose keys/values were kept from an earlier request, found (hits) or computed (misses).
    var promptCache: PromptCacheHealth
    enum CodingKeys: String, CodingKey {
        case status, model, imageSize = "image_size", generation, queued, maxQueued = "max_queued", completed, cancelled
        case promptCache = "prompt_cache"
    }
}

struct PromptCacheHealth: Encodable {
    var prompts: Int
    var bytes: Int
    var hits: Int
    var misses: Int
}

struct ErrorResponse: Encodable {
    var error: String
}

/// Server-sent events of a streamed answer or generation.
enum StreamEvent: Encodable {
    case text(String)
    case step(Int, of: Int)
    case answer(UnderstandResponse)
    case images(GenerateResponse)
    case failure(String)

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        switch self {
        case .text(let piece): try c.encode(piece, forKey: .text)
        case .step(let k, let n):
            try c.encode(k, forKey: .step)
            try c.encode(n, forKey: .steps)
        case .answer(let response):
            try c.encode(true, forKey: .done)
            try response.encode(to: encoder)
        case .images(let response):
            try c.encode(true, forKey: .done)
            try response.encode(to: encoder)
        case .failure(let message): try c.encode(message, forKey: .error)
        }
    }
    private enum Key: String, CodingKey { case text, step, steps, done, error }
}

func encodeJSON<T: Encodable>(_ value: T) -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    // Every value here is encodable (strings, numbers, arrays of strings).
    return try! encoder.encode(value)
}
