import Foundation

/// The bodies of the server's POST endpoints, read and checked as the server reads them before any model work:
/// for clients that want to check a request without sending it, and for the fuzz target that throws arbitrary
/// bytes at them.
public enum RequestBodies {
    /// A POST endpoint that takes a JSON body.
    public enum Endpoint: String, CaseIterable, Sendable {
        /// `POST /v1/understand`: a question about one image.
        case understand = "/v1/understand"
        /// `POST /v1/generate`: images from a prompt.
        case generate = "/v1/generate"
        /// `POST /v1/chat/completions`: OpenAI's chat, with image parts.
        case chatCompletions = "/v1/chat/completions"
        /// `POST /v1/images/generations`: OpenAI's image generation.
        case imageGenerations = "/v1/images/generations"
    }

    /// Reads `body` as `endpoint` does under `configuration`'s limits for a model of `imageSize` pixels; throws the
    /// `APIError` (a 4xx status and the message naming the field) that the server would answer with.
    public static func check(_ body: Data, for endpoint: Endpoint, configuration: ServerConfiguration = ServerConfiguration(),
                             imageSize: Int = 384) throws {
        switch endpoint {
        case .understand:
            _ = try UnderstandRequest(body: body, maxNewTokens: configuration.maxNewTokens)
        case .generate:
            _ = try GenerateRequest(body: body, maxImages: configuration.maxImagesPerRequest, maxSteps: configuration.maxSteps)
        case .chatCompletions:
            _ = try ChatCompletionRequest(body: body, maxNewTokens: configuration.maxNewTokens)
        case .imageGenerations:
            _ = try ImageGenerationRequest(body: body, imageSize: imageSize, maxImages: configuration.maxImagesPerRequest,
                                           maxSteps: configuration.maxSteps)
        }
    }
}
