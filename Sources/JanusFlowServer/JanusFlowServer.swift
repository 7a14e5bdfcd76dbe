import Foundation
import Hummingbird
import JanusFlow
import JanusFlowImageIO
import Logging
import NIOCore

/// Limits and address of a `JanusFlowServer`.
public struct ServerConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Requests allowed to wait while one runs; more get 503 at once.
    public var maxQueued: Int
    public var maxBodyBytes: Int
    public var maxImagesPerRequest: Int
    public var maxSteps: Int
    public var maxNewTokens: Int
    /// Shown by `/health` (the model folder's name, say).
    public var modelName: String

    public init(host: String = "127.0.0.1", port: Int = 8080, maxQueued: Int = 8, maxBodyBytes: Int = 32 << 20,
                maxImagesPerRequest: Int = 8, maxSteps: Int = 200, maxNewTokens: Int = 2048, modelName: String = "janusflow") {
        self.host = host
        self.port = port
        self.maxQueued = maxQueued
        self.maxBodyBytes = maxBodyBytes
        self.maxImagesPerRequest = maxImagesPerRequest
        self.maxSteps = maxSteps
        self.maxNewTokens = maxNewTokens
        self.modelName = modelName
    }
}

/// JanusFlow over HTTP: `POST /v1/understand` (a question about an image), `POST /v1/generate` (images from a
/// prompt), `GET /health`. Bodies are JSON; `"stream": true` answers with server-sent events (text pieces, or one
/// event per sampling step) ending in the full result. Requests run one at a time, in arrival order.
public final class JanusFlowServer: Sendable {
    public let pipeline: JanusFlowPipeline
    public let configuration: ServerConfiguration
    let worker: ModelWorker
    let logger: Logger

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
        let app = Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(configuration.host, port: port), serverName: "janusflow"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? port) },
            logger: logger)
        try await app.runService()
    }

    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: LogRequestsMiddleware(.info))
        router.add(middleware: JSONErrorMiddleware())
        router.get("health") { _, _ in self.health() }
        router.post("v1/understand") { request, _ in await self.answering("understand") { try await self.understand(request) } }
        router.post("v1/generate") { request, _ in await self.answering("generate") { try await self.generate(request) } }
        return router
    }

    // MARK: Endpoints

    func health() -> Response {
        let finished = worker.finished
        return json(HealthResponse(status: "ok", model: configuration.modelName, imageSize: pipeline.imageSize, generation: pipeline.vae != nil,
                                   queued: worker.queued, maxQueued: configuration.maxQueued, completed: finished.completed,
                                   cancelled: finished.cancelled))
    }

    func understand(_ request: Request) async throws -> Response {
        let parsed = try UnderstandRequest(body: try await body(of: request), maxNewTokens: configuration.maxNewTokens)
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
            return eventStream(reservation) { cancellation, emit in .answer(try run(cancellation) { emit(.text($0)) }) }
        }
        return json(try await reservation.run { try run($0, nil) })
    }

    func generate(_ request: Request) async throws -> Response {
        let parsed = try GenerateRequest(body: try await body(of: request), maxImages: configuration.maxImagesPerRequest,
                                         maxSteps: configuration.maxSteps)
        guard pipeline.vae != nil else { throw APIError(501, "image generation is off: the server was started without a VAE folder (--vae)") }
        let wantsPNG = request.headers[.accept]?.contains("image/png") ?? false
        if wantsPNG && (parsed.count != 1 || parsed.stream) {
            throw APIError.badRequest("'Accept: image/png' returns one image without streaming; ask for count 1, or accept JSON")
        }
        let reservation = try worker.reserve()
        let pipeline = self.pipeline
        let start = Date()
        let run: @Sendable (Cancellation, ((Int, Int) -> Void)?) throws -> [RGBImage] = { cancellation, emit in
            try pipeline.generate(prompt: parsed.prompt, count: parsed.count, steps: parsed.steps, cfg: parsed.cfg, seed: parsed.seed,
                                  noise: parsed.noise) { step, total in
                emit?(step, total)
                return !cancellation.isCancelled
            }
        }
        let result: @Sendable ([RGBImage]) throws -> GenerateResponse = { images in
            GenerateResponse(images: try images.map { try $0.pngData().base64EncodedString() }, width: pipeline.imageSize,
                             height: pipeline.imageSize, seed: String(parsed.seed), seconds: Date().timeIntervalSince(start))
        }
        if parsed.stream {
            return eventStream(reservation) { cancellation, emit in .images(try result(try run(cancellation) { emit(.step($0, of: $1)) })) }
        }
        let images = try await reservation.run { try run($0, nil) }
        if wantsPNG {
            return Response(status: .ok, headers: [.contentType: "image/png"], body: .init(byteBuffer: ByteBuffer(data: try images[0].pngData())))
        }
        return json(try result(images))
    }

    // MARK: Plumbing

    func body(of request: Request) async throws -> Data {
        var request = request
        do {
            let buffer = try await request.collectBody(upTo: configuration.maxBodyBytes)
            return Data(buffer.readableBytesView)
        } catch is NIOTooManyBytesError {
            throw APIError(413, "the request body is larger than the server's limit of \(configuration.maxBodyBytes) bytes (--max-body-mb)")
        }
    }

    /// Every refusal as `{"error": message}` with its status; anything unexpected as a 500 that says what failed.
    func answering(_ name: String, _ handler: () async throws -> Response) async -> Response {
        let start = Date()
        do {
            let response = try await handler()
            // A streamed response is still running here; its job logs nothing more.
            logger.info("\(name): \(response.status.code) after \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
            return response
        } catch {
            let (status, message) = describe(error)
            if status == 500 { logger.error("\(name) failed: \(message)") } else { logger.info("\(name): \(status) \(message)") }
            return json(ErrorResponse(error: message), status: HTTPResponse.Status(code: status))
        }
    }

    func describe(_ error: Error) -> (Int, String) {
        switch error {
        case let error as APIError: return (error.status, error.message)
        case let error as ImageError: return (400, error.message)
        case let error as JanusFlowPipeline.GenerationError: return (400, error.message)
        case is CancellationError, is SamplingCancelled: return (499, "cancelled")
        default: return (500, "internal error: \(error)")
        }
    }

    func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: encodeJSON(value))))
    }

    /// A `text/event-stream` response: each event a `data: {json}` line as the job produces it, then the job's
    /// final event (or `{"error": ...}`). A client that goes away cancels the job at its next token or step.
    func eventStream(_ reservation: ModelWorker.Reservation,
                     _ job: @escaping @Sendable (Cancellation, @escaping (StreamEvent) -> Void) throws -> StreamEvent) -> Response {
        let body = ResponseBody { writer in
            let (events, continuation) = AsyncStream<StreamEvent>.makeStream()
            let task = Task {
                do {
                    let final = try await reservation.run { cancellation in try job(cancellation) { continuation.yield($0) } }
                    continuation.yield(final)
                } catch {
                    continuation.yield(.failure(self.describe(error).1))
                }
                continuation.finish()
            }
            do {
                for await event in events {
                    var line = ByteBuffer(string: "data: ")
                    line.writeBytes(encodeJSON(event))
                    line.writeString("\n\n")
                    try await writer.write(line)
                }
                try await writer.finish(nil)
            } catch {
                task.cancel()
                throw error
            }
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}

/// Hummingbird's own refusals (an unknown path, say) in the same `{"error": ...}` shape as the server's.
struct JSONErrorMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    static let endpoints = "GET /health, POST /v1/understand, POST /v1/generate"

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
