import Foundation
import Hummingbird
import JanusFlow
import JanusFlowImageIO
import Logging
import NIOCore

/// Limits and address of a `JanusFlowServer`.
public struct ServerConfiguration: Sendable {
    /// The address to listen on; anything but loopback without `apiKey` logs a warning.
    public var host: String
    /// The TCP port; 0 picks a free one.
    public var port: Int
    /// Requests allowed to wait while one runs; more get 503 at once.
    public var maxQueued: Int
    /// The largest request body accepted, in bytes; a larger one gets 413.
    public var maxBodyBytes: Int
    /// The most images one generation request may ask for (`count`, or `n` in the OpenAI endpoint).
    public var maxImagesPerRequest: Int
    /// The most sampling steps a generation request may ask for; unset, it gets 30 or this if lower.
    public var maxSteps: Int
    /// The most new tokens a request may ask for (`max_tokens`, or OpenAI's `max_completion_tokens`); unset, it gets
    /// 512 or this if lower.
    public var maxNewTokens: Int
    /// Shown by `/health` (the model folder's name, say).
    public var modelName: String
    /// When set, every endpoint but `/health` requires `Authorization: Bearer <apiKey>`.
    public var apiKey: String?
    /// Seconds a client has to send a whole request body; a slower one gets 408 and its connection closes.
    public var requestTimeout: Double
    /// Seconds a connection may stay open with nothing read or written before it is closed.
    public var idleTimeout: Double

    /// Creates a configuration; by default the server listens on 127.0.0.1:8080 without an API key.
    public init(host: String = "127.0.0.1", port: Int = 8080, maxQueued: Int = 8, maxBodyBytes: Int = 32 << 20,
                maxImagesPerRequest: Int = 8, maxSteps: Int = 200, maxNewTokens: Int = 2048, modelName: String = "janusflow", apiKey: String? = nil,
                requestTimeout: Double = 30, idleTimeout: Double = 120) {
        self.host = host
        self.port = port
        self.maxQueued = maxQueued
        self.maxBodyBytes = maxBodyBytes
        self.maxImagesPerRequest = maxImagesPerRequest
        self.maxSteps = maxSteps
        self.maxNewTokens = maxNewTokens
        self.modelName = modelName
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
        self.apiKey = apiKey
    }
}

/// JanusFlow over HTTP: `POST /v1/understand` (a question about an image), `POST /v1/generate` (images from a
/// prompt), `GET /health`, and the OpenAI-compatible `POST /v1/chat/completions`, `POST /v1/images/generations` and
/// `GET /v1/models`. Bodies are JSON; `"stream": true` answers with server-sent events (text pieces, or one event
/// per sampling step) ending in the full result. Requests run one at a time, in arrival order. `GET /` serves a page
/// for people: chat about pictures and generation, over these same endpoints.
public final class JanusFlowServer: Sendable {
    /// The model that answers every request.
    public let pipeline: JanusFlowPipeline
    /// The address and limits the server was created with.
    public let configuration: ServerConfiguration
    let worker: ModelWorker
    let logger: Logger
    let page = WebPage()

    /// Creates a server for `pipeline`; nothing listens until `run(onListening:)`. Logs go to `logger`, or to one
    /// labelled "janusflow.server".
    public init(pipeline: JanusFlowPipeline, configuration: ServerConfiguration = ServerConfiguration(), logger: Logger? = nil) {
        self.pipeline = pipeline
        self.configuration = configuration
        worker = ModelWorker(maxQueued: configuration.maxQueued)
        self.logger = logger ?? Logger(label: "janusflow.server")
    }

    /// Serves until SIGINT or SIGTERM (or until the calling task is cancelled); `onListening` gets the bound port
    /// (useful with port 0, which picks a free one).
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let port = configuration.port
        if let warning = configuration.exposureWarning { logger.warning("\(warning)") }
        let app = Application(
            router: makeRouter(),
            server: .http1(configuration: .init(idleTimeout: .milliseconds(Int64(configuration.idleTimeout * 1000)))),
            configuration: .init(address: .hostname(configuration.host, port: port), serverName: "janusflow"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? port) },
            logger: logger)
        try await app.runService()
    }

    /// The routes of every endpoint behind request logging, JSON error bodies and, when `apiKey` is set, the key check.
    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: LogRequestsMiddleware(.info))
        router.add(middleware: JSONErrorMiddleware())
        if let key = configuration.apiKey { router.add(middleware: BearerKeyMiddleware(key: key)) }
        router.get("health") { _, _ in self.health() }
        for path in WebPage.names.map(\.path) + ["/index.html"] {
            router.get(RouterPath(path)) { request, _ in self.page.response(for: request.uri.path) }
        }
        router.post("v1/understand") { request, _ in await self.answering("understand") { try await self.understand(request) } }
        router.post("v1/generate") { request, _ in await self.answering("generate") { try await self.generate(request) } }
        router.post("v1/chat/completions") { request, _ in
            await self.answering("chat/completions", openAI: true) { try await self.chatCompletion(request) }
        }
        router.post("v1/images/generations") { request, _ in
            await self.answering("images/generations", openAI: true) { try await self.imageGeneration(request) }
        }
        router.get("v1/models") { _, _ in self.json(ModelList(data: [.init(id: self.configuration.modelName)])) }
        return router
    }

    // MARK: Endpoints

    func health() -> Response {
        let finished = worker.finished
        return json(HealthResponse(status: "ok", model: configuration.modelName, imageSize: pipeline.imageSize, generation: pipeline.vae != nil,
                                   queued: worker.queued, maxQueued: configuration.maxQueued, completed: finished.completed,
                                   cancelled: finished.cancelled,
                                   promptCache: PromptCacheHealth(prompts: pipeline.promptCaches.count, bytes: pipeline.promptCaches.bytes,
                                                                  hits: pipeline.promptCaches.hits, misses: pipeline.promptCaches.misses)))
    }

    func understand(_ request: Request) async throws -> Response {
        let parsed = try UnderstandRequest(body: try await body(of: request), maxNewTokens: configuration.maxNewTokens)
        // Refused now, before a stream has answered 200.
        _ = try pipeline.prompt(conversation: JanusFlowPipeline.imageQuestion(parsed.question, history: parsed.history), images: 1)
        let reservation = try worker.reserve()
        let pipeline = self.pipeline
        let start = Date()
        let run: @Sendable (Cancellation, ((String) -> Void)?) throws -> UnderstandResponse = { cancellation, emit in
            let answer = try pipeline.answer(image: parsed.image, question: parsed.question, history: parsed.history,
                                             parameters: parsed.parameters) { piece in
                emit?(piece)
                return !cancellation.isCancelled
            }
            return UnderstandResponse(answer: answer.text, tokens: answer.tokenCount, finishReason: answer.ending.rawValue,
                                      seconds: Date().timeIntervalSince(start))
        }
        if parsed.stream {
            return eventStream(reservation, encode: Self.nativeEvent, failure: StreamEvent.failure) { cancellation, emit in
                .answer(try run(cancellation) { emit(.text($0)) })
            }
        }
        return json(try await reservation.run { try run($0, nil) })
    }

    func generate(_ request: Request) async throws -> Response {
        let parsed = try GenerateRequest(body: try await body(of: request), maxImages: configuration.maxImagesPerRequest,
                                         maxSteps: configuration.maxSteps)
        let run = try generation(parsed)
        let wantsPNG = request.headers[.accept]?.contains("image/png") ?? false
        if wantsPNG && (parsed.count != 1 || parsed.stream) {
            throw APIError.badRequest("'Accept: image/png' returns one image without streaming; ask for count 1, or accept JSON")
        }
        let reservation = try worker.reserve()
        let pipeline = self.pipeline
        let start = Date()
        let result: @Sendable ([RGBImage]) throws -> GenerateResponse = { images in
            GenerateResponse(images: try images.map { try $0.pngData().base64EncodedString() }, width: pipeline.imageSize,
                             height: pipeline.imageSize, seed: String(parsed.seed), seconds: Date().timeIntervalSince(start))
        }
        if parsed.stream {
            return eventStream(reservation, encode: Self.nativeEvent, failure: StreamEvent.failure) { cancellation, emit in
                .images(try result(try run(cancellation) { emit(.step($0, of: $1)) }))
            }
        }
        let images = try await reservation.run { try run($0, nil) }
        if wantsPNG {
            return Response(status: .ok, headers: [.contentType: "image/png"], body: .init(byteBuffer: ByteBuffer(data: try images[0].pngData())))
        }
        return json(try result(images))
    }

    // MARK: OpenAI-compatible endpoints

    func chatCompletion(_ request: Request) async throws -> Response {
        let parsed = try ChatCompletionRequest(body: try await body(of: request), maxNewTokens: configuration.maxNewTokens)
        // Refused now, before a stream has answered 200.
        _ = try pipeline.prompt(conversation: parsed.conversation, images: parsed.images.count, systemPrompt: parsed.systemPrompt)
        let reservation = try worker.reserve()
        let pipeline = self.pipeline
        let id = "chatcmpl-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let created = Int(Date().timeIntervalSince1970)
        let model = configuration.modelName
        let run: @Sendable (Cancellation, ((String) -> Void)?) throws -> JanusFlowPipeline.Answer = { cancellation, emit in
            try pipeline.answer(conversation: parsed.conversation, images: parsed.images, systemPrompt: parsed.systemPrompt,
                                parameters: parsed.parameters) { piece in
                emit?(piece)
                return !cancellation.isCancelled
            }
        }
        if parsed.stream {
            let includeUsage = parsed.includeUsage
            let encode: @Sendable (ChatStreamEvent) -> [Data] = { event in
                func chunk(_ delta: (role: String?, content: String?)?, finish: String? = nil, usage: Usage? = nil) -> Data {
                    encodeJSON(ChatCompletionChunk(id: id, created: created, model: model, delta: delta, finishReason: finish, usage: usage))
                }
                switch event {
                case .start: return [chunk((role: "assistant", content: ""))]
                case .text(let piece): return [chunk((role: nil, content: piece))]
                case .finished(let answer):
                    let last = chunk((role: nil, content: nil), finish: answer.ending.rawValue)
                    return includeUsage ? [last, chunk(nil, usage: Usage(answer))] : [last]
                case .failure(let message): return [encodeJSON(OpenAIErrorResponse(status: 500, message: message))]
                }
            }
            return eventStream(reservation, encode: encode, failure: ChatStreamEvent.failure, trailer: "[DONE]") { cancellation, emit in
                emit(.start)
                return .finished(try run(cancellation) { emit(.text($0)) })
            }
        }
        let answer = try await reservation.run { try run($0, nil) }
        return json(ChatCompletion(id: id, created: created, model: model,
                                   choices: [.init(message: .init(content: answer.text), finishReason: answer.ending.rawValue)],
                                   usage: Usage(answer)))
    }

    func imageGeneration(_ request: Request) async throws -> Response {
        let parsed = try ImageGenerationRequest(body: try await body(of: request), imageSize: pipeline.imageSize,
                                                maxImages: configuration.maxImagesPerRequest, maxSteps: configuration.maxSteps).generation
        let run = try generation(parsed)
        let images = try await worker.reserve().run { try run($0, nil) }
        return json(ImagesResponse(created: Int(Date().timeIntervalSince1970),
                                   data: try images.map { .init(b64Json: try $0.pngData().base64EncodedString()) }))
    }

    // MARK: Plumbing

    /// The job that makes a request's images (steps reported to `emit`, stopped when the client goes away); refused
    /// with 501 when the server has no VAE.
    func generation(_ parsed: GenerateRequest) throws -> @Sendable (Cancellation, ((Int, Int) -> Void)?) throws -> [RGBImage] {
        guard pipeline.vae != nil else { throw APIError(501, "image generation is off: the server was started without a VAE folder (--vae)") }
        let pipeline = self.pipeline
        return { cancellation, emit in
            try pipeline.generate(prompt: parsed.prompt, count: parsed.count, steps: parsed.steps, cfg: parsed.cfg, seed: parsed.seed,
                                  noise: parsed.noise) { step, total in
                emit?(step, total)
                return !cancellation.isCancelled
            }
        }
    }

    /// `30` for 30.0, `2.5` for 2.5.
    static func seconds(_ value: Double) -> String { value.rounded() == value ? String(Int(value)) : String(value) }

    func body(of request: Request) async throws -> Data {
        var request = request
        let limit = configuration.maxBodyBytes, timeout = configuration.requestTimeout
        do {
            // A client that sends its body slowly (one byte now and then) would hold a connection and a task for
            // ever; past the deadline the body is abandoned and the client told.
            let buffer = try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
                let unread = request
                group.addTask {
                    var request = unread
                    return try await request.collectBody(upTo: limit)
                }
                group.addTask {
                    try await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
                    return nil
                }
                let first = try await group.next()!
                group.cancelAll()
                guard let first else {
                    throw APIError(408, "the request body did not arrive within \(Self.seconds(timeout)) s (--request-timeout)")
                }
                return first
            }
            return Data(buffer.readableBytesView)
        } catch is NIOTooManyBytesError {
            throw APIError(413, "the request body is larger than the server's limit of \(configuration.maxBodyBytes) bytes (--max-body-mb)")
        }
    }

    /// Every refusal as `{"error": message}` with its status; anything unexpected as a 500 that says what failed.
    /// `openAI`: errors in OpenAI's `{"error": {"message", "type", "param", "code"}}` shape.
    func answering(_ name: String, openAI: Bool = false, _ handler: () async throws -> Response) async -> Response {
        let start = Date()
        do {
            let response = try await handler()
            // A streamed response is still running here; its job logs nothing more.
            logger.info("\(name): \(response.status.code) after \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
            return response
        } catch {
            let (status, message) = describe(error)
            if status == 500 { logger.error("\(name) failed: \(message)") } else { logger.info("\(name): \(status) \(message)") }
            let code = HTTPResponse.Status(code: status)
            return openAI ? json(OpenAIErrorResponse(status: status, message: message), status: code) : json(ErrorResponse(error: message), status: code)
        }
    }

    func describe(_ error: Error) -> (Int, String) {
        switch error {
        case let error as APIError: return (error.status, error.message)
        case let error as ImageError: return (400, error.message)
        case let error as JanusFlowPipeline.GenerationError: return (400, error.message)
        case let error as JanusFlowPipeline.ConversationError: return (400, error.message)
        case is CancellationError, is SamplingCancelled: return (499, "cancelled")
        default: return (500, "internal error: \(error)")
        }
    }

    func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: encodeJSON(value))))
    }

    static func nativeEvent(_ event: StreamEvent) -> [Data] { [encodeJSON(event)] }

    /// A `text/event-stream` response: each event as `data: ...` lines (`encode` gives their payloads) as the job
    /// produces it, then the job's final event (or `failure`'s), then `trailer` if any. While the job waits behind
    /// others, `: queued N` comment lines (N jobs ahead; SSE clients, OpenAI's SDKs among them, skip comments) say its
    /// place whenever it changes, and `: queued 0` when it starts. A client that goes away cancels the job at its
    /// next token or step.
    func eventStream<Event: Sendable>(_ reservation: ModelWorker.Reservation, encode: @escaping @Sendable (Event) -> [Data],
                                      failure: @escaping @Sendable (String) -> Event, trailer: String? = nil,
                                      _ job: @escaping @Sendable (Cancellation, @escaping (Event) -> Void) throws -> Event) -> Response {
        let body = ResponseBody { writer in
            let (items, continuation) = AsyncStream<StreamItem<Event>>.makeStream()
            // Places while waiting come from a watcher; "started" (queued 0) from the job itself, ahead of its events.
            let waitedAtStart = reservation.ahead > 0
            let watcher = Task {
                var last = reservation.ahead
                if last > 0 { continuation.yield(.queued(last)) }
                while last > 0, !reservation.started, !Task.isCancelled {
                    try? await Task.sleep(nanoseconds: 200_000_000)
                    let now = reservation.ahead
                    if now != last, now > 0, !reservation.started { continuation.yield(.queued(now)) }
                    last = now
                }
            }
            let task = Task {
                do {
                    let final = try await reservation.run { cancellation in
                        if waitedAtStart { continuation.yield(.queued(0)) }
                        return try job(cancellation) { continuation.yield(.event($0)) }
                    }
                    continuation.yield(.event(final))
                } catch {
                    continuation.yield(.event(failure(self.describe(error).1)))
                }
                watcher.cancel()
                continuation.finish()
            }
            func send(_ payload: Data, prefix: String = "data: ") async throws {
                var line = ByteBuffer(string: prefix)
                line.writeBytes(payload)
                line.writeString("\n\n")
                try await writer.write(line)
            }
            do {
                for await item in items {
                    switch item {
                    case .queued(let ahead): try await send(Data("queued \(ahead)".utf8), prefix: ": ")
                    case .event(let event): for payload in encode(event) { try await send(payload) }
                    }
                }
                if let trailer { try await send(Data(trailer.utf8)) }
                try await writer.finish(nil)
            } catch {
                watcher.cancel()
                task.cancel()
                throw error
            }
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}

/// What a stream sends: the job's events, and its place in the queue while it waits.
enum StreamItem<Event: Sendable>: Sendable {
    case event(Event)
    case queued(Int)
}

/// Hummingbird's own refusals (an unknown path, say) in the same `{"error": ...}` shape as the server's.
struct JSONErrorMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    static let endpoints = "GET / (the web page), GET /health, POST /v1/understand, POST /v1/generate, POST /v1/chat/completions, POST /v1/images/generations, GET /v1/models"

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            let message = error.status == .notFound
                ? "no endpoint \(request.method) \(request.uri.path) (endpoints: \(Self.endpoints))"
                : error.body ?? error.status.reasonPhrase
            return Response(status: error.status, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(data: encodeJSON(ErrorResponse(error: message)))))
        }
    }
}

extension ByteBuffer {
    init(data: Data) {
        self.init(bytes: data)
    }
}
