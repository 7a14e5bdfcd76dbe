import ArgumentParser
import Foundation
import JanusFlowServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the model over HTTP: POST /v1/understand, POST /v1/generate, GET /health, and OpenAI's POST /v1/chat/completions, POST /v1/images/generations, GET /v1/models (JSON; \"stream\": true for server-sent events).")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "The SDXL-VAE folder or Hub name (stabilityai/sdxl-vae, in the Hugging Face cache); without it /v1/generate and /v1/images/generations answer 501.")
    var vae: String?
    @Option(help: "Address to listen on (0.0.0.0 for every interface).")
    var host = "127.0.0.1"
    @Option(help: "Port to listen on (0 picks a free one and prints it).")
    var port = 8080
    @Option(help: "Requests that may wait while one runs; more are refused with 503.")
    var maxQueued = 8
    @Option(help: "Largest request body in MB (images travel base64-encoded inside the JSON).")
    var maxBodyMb = 32
    @Option(help: "Most images one /v1/generate request may ask for.")
    var maxImages = 8
    @Option(help: "Most Euler steps one request may ask for.")
    var maxSteps = 200
    @Option(help: "Most new tokens one answer may ask for.")
    var maxTokens = 2048
    @Option(help: "Seconds a client has to send a whole request body; a slower one gets 408.")
    var requestTimeout = 30.0
    @Option(help: "Seconds a connection may sit idle before it is closed.")
    var idleTimeout = 120.0
    @Option(help: "Require 'Authorization: Bearer KEY' on every endpoint but /health (default: $JANUSFLOW_API_KEY; the variable keeps the key out of process listings).")
    var apiKey: String?

    /// --api-key, else $JANUSFLOW_API_KEY, else none.
    var resolvedAPIKey: String? { apiKey ?? ProcessInfo.processInfo.environment["JANUSFLOW_API_KEY"] }

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be from 0 to 65535 (got \(port))") }
        guard maxQueued >= 0 else { throw ValidationError("--max-queued must be at least 0 (got \(maxQueued))") }
        guard maxBodyMb >= 1 else { throw ValidationError("--max-body-mb must be at least 1 (got \(maxBodyMb))") }
        guard maxImages >= 1 else { throw ValidationError("--max-images must be at least 1 (got \(maxImages))") }
        guard maxSteps >= 1 else { throw ValidationError("--max-steps must be at least 1 (got \(maxSteps))") }
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1 (got \(maxTokens))") }
        guard requestTimeout > 0, requestTimeout.isFinite else { throw ValidationError("--request-timeout must be above 0 seconds (got \(requestTimeout))") }
        guard idleTimeout > 0, idleTimeout.isFinite else { throw ValidationError("--idle-timeout must be above 0 seconds (got \(idleTimeout))") }
        if apiKey?.isEmpty == true { throw ValidationError("--api-key must not be empty") }
        if apiKey == nil, ProcessInfo.processInfo.environment["JANUSFLOW_API_KEY"]?.isEmpty == true {
            throw ValidationError("JANUSFLOW_API_KEY is set but empty (unset it to serve without a key)")
        }
        if let vae { _ = try resolveModelFolder("--vae", vae) }
    }

    func run() async throws {
        let pipeline = try modelOptions.loadPipeline(vae: vae)
        let configuration = ServerConfiguration(
            host: host, port: port, maxQueued: maxQueued, maxBodyBytes: maxBodyMb << 20, maxImagesPerRequest: maxImages,
            maxSteps: maxSteps, maxNewTokens: maxTokens, modelName: URL(fileURLWithPath: modelOptions.model).lastPathComponent,
            apiKey: resolvedAPIKey, requestTimeout: requestTimeout, idleTimeout: idleTimeout)
        let server = JanusFlowServer(pipeline: pipeline, configuration: configuration)
        let host = self.host
        let generation = vae == nil ? "off (no --vae)" : "on"
        try await server.run { port in
            note("janusflow serving on http://\(host):\(port) (image generation \(generation); \(configuration.apiKey == nil ? "no API key" : "API key required")); Ctrl-C stops")
        }
        // Shut down cleanly: leave without running the C++ static destructors. With SwiftNIO's and Dispatch's threads
        // still alive they raced the exit (1 in 20-30 SIGTERMs under load aborted with "malloc(): unsorted double
        // linked list corrupted"); everything the server owed is written by now.
        fflush(nil)  // every open output stream
        _exit(0)
    }
}
