import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowTokenizer

// OpenAI-compatible endpoints, so that clients written for OpenAI's API (its SDKs, chat front ends, image tools)
// talk to JanusFlow unchanged: POST /v1/chat/completions, POST /v1/images/generations, GET /v1/models.
// Fields JanusFlow cannot honour are refused by name rather than ignored; errors come in OpenAI's
// {"error": {"message", "type", ...}} shape.

/// `POST /v1/chat/completions`: the next assistant message of a conversation with any number of images.
struct ChatCompletionRequest {
    static let fields = ["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
                         "repetition_penalty", "seed", "stream", "stream_options", "n", "stop", "presence_penalty",
                         "frequency_penalty", "logprobs", "response_format", "user"]

    var conversation: [ChatMessage]
    var images: [RGBImage]
    var systemPrompt: String
    var parameters: SamplingParameters
    var stream: Bool
    var includeUsage: Bool

    init(body: Data, maxNewTokens: Int) throws {
        let f = try RequestFields(body: body, allowed: Self.fields)
        _ = try f.string("model")
        _ = try f.string("user")
        (conversation, images, systemPrompt) = try Self.readMessages(f)
        let maxTokens = try f.integer("max_completion_tokens", in: 1...maxNewTokens) ?? f.integer("max_tokens", in: 1...maxNewTokens)
        // Greedy unless asked, as DeepSeek's demo answers (OpenAI's own default temperature is 1).
        parameters = try f.sampling(maxTokens: maxTokens, maxNewTokens: maxNewTokens, temperatures: 0...2)
        stream = try f.bool("stream") ?? false
        includeUsage = false
        if let options = f.value("stream_options") {
            guard case .object(let fields) = options, fields.keys.allSatisfy({ $0 == "include_usage" }) else {
                throw APIError.badRequest("'stream_options' must be an object with the field 'include_usage' only")
            }
            switch fields["include_usage"] {
            case nil, .null?: break
            case .bool(let b)?: includeUsage = b
            default: throw APIError.badRequest("'stream_options.include_usage' must be true or false")
            }
        }
        // What OpenAI's API has and JanusFlow does not: accepted only at their neutral values.
        if let n = try f.integer("n", in: 0...Int(Int32.max)), n != 1 { throw APIError.badRequest("'n' must be 1 (one answer per request; got \(n))") }
        if let stop = f.value("stop"), stop != .array([]) {
            throw APIError.badRequest("'stop' is not supported: an answer ends at the model's end-of-sentence token or at max_tokens")
        }
        for name in ["presence_penalty", "frequency_penalty"] {
            if let v = try f.number(name, in: -2...2), v != 0 { throw APIError.badRequest("'\(name)' is not supported (use repetition_penalty)") }
        }
        if try f.bool("logprobs") == true { throw APIError.badRequest("'logprobs' is not supported") }
        if let format = f.value("response_format"), format != .object(["type": .string("text")]) {
            throw APIError.badRequest("'response_format' must be {\"type\": \"text\"} (JanusFlow answers in plain text)")
        }
    }

    /// The conversation in JanusFlow's terms: system text, alternating User/Assistant turns with an image tag where
    /// each image goes, and the images in order.
    static func readMessages(_ f: RequestFields) throws -> ([ChatMessage], [RGBImage], String) {
        guard let value = f.value("messages") else { throw APIError.badRequest("'messages' is required") }
        guard case .array(let items) = value, !items.isEmpty else {
            throw APIError.badRequest("'messages' must be a non-empty array of {\"role\", \"content\"} objects")
        }
        var system: [String] = []
        var turns: [ChatMessage] = []
        var images: [RGBImage] = []
        for (i, item) in items.enumerated() {
            let name = "messages[\(i)]"
            guard case .object(let message) = item else { throw APIError.badRequest("'\(name)' must be an object with 'role' and 'content'") }
            if let unknown = message.keys.filter({ !["role", "content", "name"].contains($0) }).sorted().first {
                throw APIError.badRequest("'\(name)' has an unknown field '\(unknown)' (fields: role, content, name)")
            }
            guard case .string(let role)? = message["role"] else { throw APIError.badRequest("'\(name).role' must be a string") }
            let expected = turns.count % 2 == 0 ? "user" : "assistant"
            switch role {
            case "system", "developer":
                guard turns.isEmpty else { throw APIError.badRequest("'\(name)': system messages must come before the conversation") }
                system.append(try content(message["content"], name: "\(name).content", imagesAllowed: false).text)
            case "user", "assistant":
                guard role == expected else {
                    throw APIError.badRequest("'\(name).role' must be '\(expected)': user and assistant messages alternate, starting with user")
                }
                let (text, found) = try content(message["content"], name: "\(name).content", imagesAllowed: role == "user")
                turns.append(role == "user" ? .user(text) : .assistant(text))
                images += found
            default:
                throw APIError.badRequest("'\(name).role' must be 'system', 'user' or 'assistant' (got '\(role)')")
            }
        }
        guard turns.count % 2 == 1 else { throw APIError.badRequest("'messages' must end with a user message") }
        return (turns, images, system.isEmpty ? ChatTemplate.systemPrompt : system.joined(separator: "\n\n"))
    }

    /// A message's content: a string, or content parts whose images (user messages only) become image tags.
    static func content(_ content: JSONField?, name: String, imagesAllowed: Bool) throws -> (text: String, images: [RGBImage]) {
        switch content {
        case .string(let s)?: return (s, [])
        case .array(let parts)?:
            var pieces: [String] = []
            var images: [RGBImage] = []
            for (j, part) in parts.enumerated() {
                let partName = "\(name)[\(j)]"
                guard case .object(let fields) = part, case .string(let type)? = fields["type"] else {
                    throw APIError.badRequest("'\(partName)' must be an object with a 'type'")
                }
                switch (type, fields["text"], fields["image_url"]) {
                case ("text", .string(let s)?, nil):
                    pieces.append(s)
                case ("image_url", nil, let url?):
                    guard imagesAllowed else { throw APIError.badRequest("'\(partName)': images are read from user messages only") }
                    images.append(try image(url, name: "\(partName).image_url"))
                    pieces.append(ChatTemplate.imageTag)
                default:
                    throw APIError.badRequest("'\(partName)' must be {\"type\": \"text\", \"text\": ...} or {\"type\": \"image_url\", \"image_url\": {\"url\": ...}}")
                }
            }
            // An image before the text reads as DeepSeek's template writes it: "<image_placeholder>\n<question>".
            return (pieces.joined(separator: "\n"), images)
        default:
            throw APIError.badRequest("'\(name)' must be a string or an array of content parts")
        }
    }

    /// An image given as `{"url": "data:image/png;base64,..."}` (or the bare URL string).
    static func image(_ value: JSONField, name: String) throws -> RGBImage {
        let url: String
        switch value {
        case .string(let s): url = s
        case .object(let fields):
            guard case .string(let s)? = fields["url"] else { throw APIError.badRequest("'\(name).url' is required") }
            url = s
        default: throw APIError.badRequest("'\(name)' must be an object with a 'url'")
        }
        guard let bytes = base64Payload(url, dataURLOnly: true) else {
            throw APIError.badRequest("'\(name).url' must be a data: URL with base64 PNG or JPEG data (the server fetches nothing from the network)")
        }
        return try decodeImage(bytes, field: "'\(name).url'")
    }
}

/// `POST /v1/images/generations`.
struct ImageGenerationRequest {
    static let fields = ["prompt", "model", "n", "size", "response_format", "user", "seed", "steps", "cfg", "noise"]

    var generation: GenerateRequest

    init(body: Data, imageSize: Int, maxImages: Int, maxSteps: Int) throws {
        let f = try RequestFields(body: body, allowed: Self.fields)
        _ = try f.string("model")
        _ = try f.string("user")
        let size = try f.string("size") ?? "auto"
        guard size == "auto" || size == "\(imageSize)x\(imageSize)" else {
            throw APIError.badRequest("'size' must be \(imageSize)x\(imageSize) or auto: the model makes \(imageSize)x\(imageSize) images only (got '\(size)')")
        }
        let format = try f.string("response_format") ?? "b64_json"
        guard format == "b64_json" else {
            throw APIError.badRequest("'response_format' must be b64_json: the server returns images in the answer, not as URLs (got '\(format)')")
        }
        generation = try GenerateRequest(fields: f, countField: "n", maxImages: maxImages, maxSteps: maxSteps)
    }
}

/// OpenAI's response bodies.
struct ChatCompletion: Encodable {
    var id: String
    var object = "chat.completion"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: Usage

    struct Choice: Encodable {
        var index = 0
        var message: Message
        var finishReason: String
        enum CodingKeys: String, CodingKey { case index, message, finishReason = "finish_reason" }
    }
    struct Message: Encodable {
        var role = "assistant"
        var content: String
    }
}

struct Usage: Encodable {
    var promptTokens: Int
    var completionTokens: Int
    var totalTokens: Int { promptTokens + completionTokens }
    enum CodingKeys: String, CodingKey { case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens" }

    init(_ answer: JanusFlowPipeline.Answer) {
        promptTokens = answer.promptTokenCount
        completionTokens = answer.tokenCount
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(promptTokens, forKey: .promptTokens)
        try c.encode(completionTokens, forKey: .completionTokens)
        try c.encode(totalTokens, forKey: .totalTokens)
    }
}

struct ChatCompletionChunk: Encodable {
    var id: String
    var created: Int
    var model: String
    /// nil: the closing usage chunk, whose choices are empty.
    var delta: (role: String?, content: String?)?
    var finishReason: String?
    var usage: Usage?

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(id, forKey: .id)
        try c.encode("chat.completion.chunk", forKey: .object)
        try c.encode(created, forKey: .created)
        try c.encode(model, forKey: .model)
        var choices = c.nestedUnkeyedContainer(forKey: .choices)
        if let delta {
            var choice = choices.nestedContainer(keyedBy: Key.self)
            try choice.encode(0, forKey: .index)
            var d = choice.nestedContainer(keyedBy: Key.self, forKey: .delta)
            try d.encodeIfPresent(delta.role, forKey: .role)
            try d.encodeIfPresent(delta.content, forKey: .content)
            if let finishReason { try choice.encode(finishReason, forKey: .finishReason) } else { try choice.encodeNil(forKey: .finishReason) }
        }
        if let usage { try c.encode(usage, forKey: .usage) }
    }
    private enum Key: String, CodingKey {
        case id, object, created, model, choices, index, delta, role, content, usage, finishReason = "finish_reason"
    }
}

struct ImagesResponse: Encodable {
    var created: Int
    var data: [Image]
    struct Image: Encodable {
        var b64Json: String
        enum CodingKeys: String, CodingKey { case b64Json = "b64_json" }
    }
}

struct ModelList: Encodable {
    var object = "list"
    var data: [Model]
    struct Model: Encodable {
        var id: String
        var object = "model"
        var created = 0
        var ownedBy = "deepseek-ai"
        enum CodingKeys: String, CodingKey { case id, object, created, ownedBy = "owned_by" }
    }
}

struct OpenAIErrorResponse: Encodable {
    var error: Body
    struct Body: Encodable {
        var message: String
        var type: String
        var code: String?
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(message, forKey: .message)
            try c.encode(type, forKey: .type)
            try c.encodeNil(forKey: .param)
            if let code { try c.encode(code, forKey: .code) } else { try c.encodeNil(forKey: .code) }
        }
        enum CodingKeys: String, CodingKey { case message, type, param, code }
    }

    init(status: Int, message: String) {
        let type = switch status {
        case 401, 403: "authentication_error"
        case 404: "not_found_error"
        case 429, 503: "rate_limit_error"
        case 400..<500: "invalid_request_error"
        default: "server_error"
        }
        error = Body(message: message, type: type, code: status == 503 ? "server_busy" : nil)
    }
}

/// Events of a streamed chat completion, as the job produces them.
enum ChatStreamEvent: Sendable {
    case start
    case text(String)
    case finished(JanusFlowPipeline.Answer)
    case failure(String)
}
