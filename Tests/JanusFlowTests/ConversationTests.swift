import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowServer
import JanusFlowTokenizer
import MLXEngine
import XCTest

/// Conversations with any number of images: each image lands at its own tag, in order.
final class ConversationTests: XCTestCase {
    var pipeline: JanusFlowPipeline { PipelineTests.pipeline }
    let red = RGBImage(width: 24, height: 20, fill: (220, 20, 20))
    let blue = RGBImage(width: 20, height: 24, fill: (20, 40, 220))
    let tag = ChatTemplate.imageTag

    func pixels(_ image: RGBImage) -> Tensor {
        let size = pipeline.preprocessor.size
        return Tensor(pipeline.preprocessor.pixelValues(image), shape: [1, 3, size, size])
    }

    func testTwoImagesGoToTheirTagsInOrder() throws {
        let conversation: [ChatMessage] = [.user("\(tag)\nthe first\n\(tag)\nthe second: which is red?")]
        let prompt = pipeline.processor.process(conversation: conversation + [.assistant("")])
        XCTAssertEqual(prompt.imageCount, 2)
        let model = pipeline.model
        let size = pipeline.preprocessor.size
        let both = concatenated([pixels(red), pixels(blue)], axis: 0).reshaped([1, 2, 3, size, size])
        let ids = Tensor(prompt.ids.map(Int32.init), shape: [1, prompt.ids.count])
        let embeds = model.prepareInputsEmbeds(ids: ids, pixels: both, imageSeqMask: Tensor(prompt.imageSeqMask, shape: [1, prompt.ids.count]))
        // The rows after each <begin_of_image> are that image's tokens, as the encoder gives them for it alone.
        let begins = prompt.ids.indices.filter { prompt.ids[$0] == pipeline.processor.beginOfImageID }
        XCTAssertEqual(begins.count, 2)
        let n = pipeline.processor.imageTokens
        for (begin, image) in zip(begins, [red, blue]) {
            let alone = try model.encodeImages(pixels(image)).values(Float.self)
            let spliced = try embeds.slice(axis: 1, begin + 1, begin + 1 + n).values(Float.self)
            XCTAssertEqual(spliced.count, alone.count)
            XCTAssertLessThan(zip(spliced, alone).map { abs($0 - $1) }.max()!, 1e-5)
        }
        // The pipeline builds exactly these embeddings, answers from them, and counts the prompt's positions.
        let built = try pipeline.inputsEmbeds(conversation: conversation, images: [red, blue])
        XCTAssertEqual(built.shape, embeds.shape)
        XCTAssertEqual(try built.values(Float.self), try embeds.values(Float.self))
        let parameters = SamplingParameters(maxNewTokens: 5)
        let answer = try pipeline.answer(conversation: conversation, images: [red, blue], parameters: parameters)
        let reference = try TextDecoder.generate(model: model, inputsEmbeds: embeds, parameters: parameters, stopTokens: [pipeline.tokenizer.eosID])
        XCTAssertEqual(answer.tokenCount, reference.tokens.count)
        XCTAssertEqual(answer.text, pipeline.tokenizer.decode(reference.tokens, skipSpecialTokens: true).trimmingCharacters(in: .whitespacesAndNewlines))
        XCTAssertEqual(answer.promptTokenCount, prompt.ids.count)
        XCTAssertEqual(answer.promptTokenCount, 2 * (n + 2) + pipeline.tokenizer.encode(
            ChatTemplate.render(conversation + [.assistant("")]).replacingOccurrences(of: tag, with: ""), addBOS: true).count)
    }

    func testTextOnlyConversationAndItsErrors() throws {
        let parameters = SamplingParameters(maxNewTokens: 4)
        let answer = try pipeline.answer(conversation: [.user("hello"), .assistant("hi"), .user("a red circle?")], images: [],
                                         systemPrompt: "Answer briefly.", parameters: parameters)
        let text = ChatTemplate.render([.user("hello"), .assistant("hi"), .user("a red circle?"), .assistant("")], systemPrompt: "Answer briefly.")
        XCTAssertTrue(text.hasPrefix("Answer briefly.\n\nUser: hello\n\nAssistant: hi"), text)
        let ids = pipeline.tokenizer.encode(text, addBOS: true)
        let embeds = pipeline.model.prepareInputsEmbeds(ids: Tensor(ids.map(Int32.init), shape: [1, ids.count]), pixels: nil, imageSeqMask: nil)
        let reference = try TextDecoder.generate(model: pipeline.model, inputsEmbeds: embeds, parameters: parameters,
                                                 stopTokens: [pipeline.tokenizer.eosID])
        XCTAssertEqual(answer.tokenCount, reference.tokens.count)
        XCTAssertEqual(answer.promptTokenCount, ids.count)

        let cases: [([ChatMessage], [RGBImage], String)] = [
            ([.user("\(tag)\n\(tag)\nq")], [red], "the conversation has 2 image tags for 1 image"),
            ([.user("q")], [red], "the conversation has 0 image tags for 1 image"),
            ([.assistant("a")], [], "message 0 is from 'Assistant' where the conversation expects User (turns alternate, starting with User)"),
            ([.user("q"), .user("q")], [], "message 1 is from 'User' where the conversation expects Assistant (turns alternate, starting with User)"),
            ([.user("q"), .assistant("a")], [], "the conversation must end with a User message"),
        ]
        for (conversation, images, message) in cases {
            XCTAssertThrowsError(try pipeline.answer(conversation: conversation, images: images)) { error in
                XCTAssertEqual((error as? JanusFlowPipeline.ConversationError)?.message, message)
            }
        }
    }
}

/// `janusflow chat` as a person types into it: plain text first, then a picture, then a follow-up question.
final class ChatCommandTests: XCTestCase {
    func testChatKeepsTheConversationAndItsImages() throws {
        guard FileManager.default.fileExists(atPath: cliBinary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let pipeline = PipelineTests.pipeline
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("chat-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let image = RGBImage(width: 30, height: 20, fill: (200, 30, 30))
        let png = folder.appendingPathComponent("red.png")
        try image.writePNG(to: png)

        let process = Process()
        process.executableURL = cliBinary
        process.arguments = ["chat", "--model", tinyFixture.appendingPathComponent("model").path, "--dtype", "float32", "--max-tokens", "4"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        input.fileHandleForWriting.write(Data("hello\n/image \(png.path)\nwhat is it?\nand its colour?\n/quit\n".utf8))
        try input.fileHandleForWriting.close()
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, printed)

        let parameters = SamplingParameters(maxNewTokens: 4)
        var conversation: [ChatMessage] = [.user("hello")]
        let first = try pipeline.understand(conversation: conversation, images: [], parameters: parameters)
        conversation += [.assistant(first), .user(ChatTemplate.imageTag + "\nwhat is it?")]
        let second = try pipeline.understand(conversation: conversation, images: [image], parameters: parameters)
        conversation += [.assistant(second), .user("and its colour?")]
        let third = try pipeline.understand(conversation: conversation, images: [image], parameters: parameters)
        // Each prompt line "> " is followed by the streamed answer.
        let answers = printed.components(separatedBy: "> ").dropFirst().map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        XCTAssertEqual(answers.count, 5, printed)  // three answers, the image note, and the prompt before /quit
        XCTAssertEqual(answers[0], first)
        XCTAssertEqual(answers[1], "(image 1 attached: 30x20; it goes with your next message)")
        XCTAssertEqual(answers[2], second)
        XCTAssertEqual(answers[3], third)
        XCTAssertFalse(printed.contains("error"), printed)
    }
}

/// The OpenAI-compatible endpoints over real sockets, their answers compared with the library's.
final class OpenAIServerTests: XCTestCase {
    var pipeline: JanusFlowPipeline { PipelineTests.pipeline }
    let image = RGBImage(width: 30, height: 20, fill: (200, 30, 30))
    let tag = ChatTemplate.imageTag

    func post(_ path: String, _ object: [String: Any], server: RunningServer = ServerTests.server) throws -> HTTPReply {
        try HTTPReply.fetch(port: server.port(), method: "POST", path: path, body: try JSONSerialization.data(withJSONObject: object))
    }

    func json(_ reply: HTTPReply) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: reply.body) as? [String: Any], String(decoding: reply.body, as: UTF8.self))
    }

    var dataURL: String { "data:image/png;base64," + (try! image.pngData().base64EncodedString()) }

    /// A user message with the image first, then the question (how OpenAI clients send a picture).
    func userTurn(_ question: String) -> [String: Any] {
        ["role": "user", "content": [["type": "image_url", "image_url": ["url": dataURL, "detail": "auto"]], ["type": "text", "text": question]]]
    }

    func testChatCompletionAnswersAsTheLibraryDoes() throws {
        let parameters = SamplingParameters(temperature: 0.8, topP: 0.9, maxNewTokens: 6, seed: 3)
        let expected = try pipeline.answer(image: image, question: "what is it?", parameters: parameters)
        let request: [String: Any] = ["model": "janusflow", "messages": [userTurn("what is it?")], "max_tokens": 6, "temperature": 0.8,
                                      "top_p": 0.9, "seed": 3]
        let reply = try post("/v1/chat/completions", request)
        XCTAssertEqual(reply.status, 200)
        let body = try json(reply)
        XCTAssertEqual(body["object"] as? String, "chat.completion")
        XCTAssertTrue((body["id"] as? String)?.hasPrefix("chatcmpl-") ?? false)
        XCTAssertEqual(body["model"] as? String, "janusflow")
        let choice = try XCTUnwrap((body["choices"] as? [[String: Any]])?.first)
        XCTAssertEqual((choice["message"] as? [String: Any])?["role"] as? String, "assistant")
        XCTAssertEqual((choice["message"] as? [String: Any])?["content"] as? String, expected.text)
        XCTAssertEqual(choice["finish_reason"] as? String, expected.ending.rawValue)
        let usage = try XCTUnwrap(body["usage"] as? [String: Int])
        let promptIDs = pipeline.processor.process(ChatTemplate.understandingPrompt(question: "what is it?")).ids.count
        XCTAssertEqual(usage, ["prompt_tokens": promptIDs, "completion_tokens": expected.tokenCount, "total_tokens": promptIDs + expected.tokenCount])

        // Streamed: a role chunk, content chunks that add up to the answer, a closing chunk, the usage, [DONE].
        var streamedRequest = request
        streamedRequest["stream"] = true
        streamedRequest["stream_options"] = ["include_usage": true]
        let streamed = try post("/v1/chat/completions", streamedRequest)
        XCTAssertEqual(streamed.headers["content-type"], "text/event-stream")
        let payloads = String(decoding: streamed.body, as: UTF8.self).components(separatedBy: "\n\n").filter { !$0.isEmpty }
        XCTAssertEqual(payloads.last, "data: [DONE]")
        let chunks = try payloads.dropLast().map { payload -> [String: Any] in
            XCTAssertTrue(payload.hasPrefix("data: "))
            return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(payload.dropFirst(6).utf8)) as? [String: Any])
        }
        XCTAssertTrue(chunks.allSatisfy { $0["object"] as? String == "chat.completion.chunk" })
        XCTAssertEqual(Set(chunks.compactMap { $0["id"] as? String }).count, 1)
        let choices = chunks.dropLast().map { ($0["choices"] as? [[String: Any]])?.first ?? [:] }
        let deltas = choices.map { $0["delta"] as? [String: Any] ?? [:] }
        XCTAssertEqual(deltas.first?["role"] as? String, "assistant")
        let text = deltas.compactMap { $0["content"] as? String }.joined()
        XCTAssertEqual(text.trimmingCharacters(in: .whitespacesAndNewlines), expected.text)
        XCTAssertEqual(choices.last?["finish_reason"] as? String, expected.ending.rawValue)
        XCTAssertTrue(choices.dropLast().allSatisfy { $0["finish_reason"] is NSNull })
        XCTAssertEqual((chunks.last?["choices"] as? [Any])?.count, 0)
        XCTAssertEqual(chunks.last?["usage"] as? [String: Int], usage)
    }

    func testChatWithSystemTextAndSeveralTurns() throws {
        let parameters = SamplingParameters(maxNewTokens: 5)
        let expected = try pipeline.answer(conversation: [.user("\(tag)\nwhat is it?"), .assistant("a red square"), .user("and its colour?")],
                                           images: [image], systemPrompt: "Answer in one word.", parameters: parameters)
        let messages: [[String: Any]] = [["role": "system", "content": "Answer in one word."], userTurn("what is it?"),
                                         ["role": "assistant", "content": "a red square"], ["role": "user", "content": "and its colour?"]]
        let body = try json(try post("/v1/chat/completions", ["messages": messages, "max_completion_tokens": 5]))
        let choice = try XCTUnwrap((body["choices"] as? [[String: Any]])?.first)
        XCTAssertEqual((choice["message"] as? [String: Any])?["content"] as? String, expected.text)
        XCTAssertEqual((body["usage"] as? [String: Int])?["prompt_tokens"], expected.promptTokenCount)

        // Text alone (no image) is a plain chat with the language model.
        let plain = try pipeline.answer(conversation: [.user("hello")], images: [], parameters: parameters)
        let plainBody = try json(try post("/v1/chat/completions", ["messages": [["role": "user", "content": "hello"]], "max_tokens": 5]))
        XCTAssertEqual(((plainBody["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String, plain.text)
    }

    func testImageGenerationReturnsTheLibrarysImages() throws {
        let expected = try pipeline.generate(prompt: "a red circle", count: 2, steps: 2, seed: 7)
        let size = "\(pipeline.imageSize)x\(pipeline.imageSize)"
        let reply = try post("/v1/images/generations", ["model": "janusflow", "prompt": "a red circle", "n": 2, "size": size,
                                                        "response_format": "b64_json", "steps": 2, "seed": 7])
        XCTAssertEqual(reply.status, 200)
        let body = try json(reply)
        XCTAssertNotNil(body["created"] as? Int)
        let images = try XCTUnwrap(body["data"] as? [[String: String]]).map { try RGBImage(data: Data(base64Encoded: $0["b64_json"]!)!) }
        XCTAssertEqual(images, expected)
    }

    func testModelList() throws {
        let reply = try HTTPReply.fetch(port: ServerTests.server.port(), method: "GET", path: "/v1/models")
        XCTAssertEqual(reply.status, 200)
        let body = try json(reply)
        XCTAssertEqual(body["object"] as? String, "list")
        let model = try XCTUnwrap((body["data"] as? [[String: Any]])?.first)
        XCTAssertEqual(model["id"] as? String, "janusflow")
        XCTAssertEqual(model["object"] as? String, "model")
    }

    func testRefusalsNameTheirFieldInOpenAIsShape() throws {
        let user: [String: Any] = ["role": "user", "content": "q"]
        let size = pipeline.imageSize
        let cases: [(String, [String: Any], Int, String)] = [
            ("/v1/chat/completions", ["messages": [user], "temprature": 1], 400,
             "unknown field 'temprature' (fields: \(["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed", "stream", "stream_options", "n", "stop", "presence_penalty", "frequency_penalty", "logprobs", "response_format", "user"].joined(separator: ", ")))"),
            ("/v1/chat/completions", ["model": "janusflow"], 400, "'messages' is required"),
            ("/v1/chat/completions", ["messages": []], 400, "'messages' must be a non-empty array of {\"role\", \"content\"} objects"),
            ("/v1/chat/completions", ["messages": [["role": "assistant", "content": "a"]]], 400,
             "'messages[0].role' must be 'user': user and assistant messages alternate, starting with user"),
            ("/v1/chat/completions", ["messages": [user, ["role": "assistant", "content": "a"]]], 400, "'messages' must end with a user message"),
            ("/v1/chat/completions", ["messages": [user, ["role": "tool", "content": "a"]]], 400,
             "'messages[1].role' must be 'system', 'user' or 'assistant' (got 'tool')"),
            ("/v1/chat/completions", ["messages": [user, ["role": "system", "content": "s"]]], 400,
             "'messages[1]': system messages must come before the conversation"),
            ("/v1/chat/completions", ["messages": [["role": "user", "content": "q", "tool_calls": []]]], 400,
             "'messages[0]' has an unknown field 'tool_calls' (fields: role, content, name)"),
            ("/v1/chat/completions", ["messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": "https://example.com/a.png"]]]]]], 400,
             "'messages[0].content[0].image_url.url' must be a data: URL with base64 PNG or JPEG data (the server fetches nothing from the network)"),
            ("/v1/chat/completions", ["messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": "data:image/gif;base64," + Data("GIF89a....".utf8).base64EncodedString()]]]]]], 400,
             "'messages[0].content[0].image_url.url': not a PNG or JPEG file (GIF image)"),
            ("/v1/chat/completions", ["messages": [user, ["role": "assistant", "content": [["type": "image_url", "image_url": ["url": dataURL]]]], user]], 400,
             "'messages[1].content[0]': images are read from user messages only"),
            ("/v1/chat/completions", ["messages": [["role": "user", "content": [["type": "audio", "audio": "x"]]]]], 400,
             "'messages[0].content[0]' must be {\"type\": \"text\", \"text\": ...} or {\"type\": \"image_url\", \"image_url\": {\"url\": ...}}"),
            ("/v1/chat/completions", ["messages": [["role": "user", "content": "\(tag) what is this?"]]], 400, "the conversation has 1 image tag for 0 images"),
            // Streamed too: refused with its status before the stream starts, not as an event after a 200.
            ("/v1/chat/completions", ["messages": [["role": "user", "content": "\(tag) what is this?"]], "stream": true], 400,
             "the conversation has 1 image tag for 0 images"),
            ("/v1/chat/completions", ["messages": [user], "n": 2], 400, "'n' must be 1 (one answer per request; got 2)"),
            ("/v1/chat/completions", ["messages": [user], "stop": ["\n"]], 400,
             "'stop' is not supported: an answer ends at the model's end-of-sentence token or at max_tokens"),
            ("/v1/chat/completions", ["messages": [user], "presence_penalty": 0.5], 400, "'presence_penalty' is not supported (use repetition_penalty)"),
            ("/v1/chat/completions", ["messages": [user], "temperature": 3], 400, "'temperature' must be from 0 to 2 (got 3)"),
            ("/v1/chat/completions", ["messages": [user], "max_tokens": 5000], 400, "'max_tokens' must be from 1 to 2048 (got 5000)"),
            ("/v1/chat/completions", ["messages": [user], "response_format": ["type": "json_object"]], 400,
             "'response_format' must be {\"type\": \"text\"} (JanusFlow answers in plain text)"),
            ("/v1/chat/completions", ["messages": [user], "stream_options": ["include_usage": "yes"]], 400,
             "'stream_options.include_usage' must be true or false"),
            ("/v1/images/generations", ["prompt": "x", "size": "1024x1024"], 400,
             "'size' must be \(size)x\(size) or auto: the model makes \(size)x\(size) images only (got '1024x1024')"),
            ("/v1/images/generations", ["prompt": "x", "response_format": "url"], 400,
             "'response_format' must be b64_json: the server returns images in the answer, not as URLs (got 'url')"),
            ("/v1/images/generations", ["prompt": "x", "n": 9], 400, "'n' must be from 1 to 8 (got 9)"),
            ("/v1/images/generations", ["prompt": "x", "quality": "hd"], 400,
             "unknown field 'quality' (fields: prompt, model, n, size, response_format, user, seed, steps, cfg, noise)"),
            ("/v1/images/generations", ["n": 1], 400, "'prompt' is required"),
        ]
        for (path, body, status, message) in cases {
            let reply = try post(path, body)
            XCTAssertEqual(reply.status, status, "\(body)")
            let error = try XCTUnwrap(try json(reply)["error"] as? [String: Any], "\(body)")
            XCTAssertEqual(error["message"] as? String, message)
            XCTAssertEqual(error["type"] as? String, "invalid_request_error")
            XCTAssertTrue(error["param"] is NSNull)
        }
        let noVAE = try JanusFlowPipeline(model: pipeline.model, vae: nil, tokenizer: pipeline.tokenizer)
        let server = RunningServer(JanusFlowServer(pipeline: noVAE, configuration: ServerConfiguration(port: 0)))
        let off = try post("/v1/images/generations", ["prompt": "x"], server: server)
        XCTAssertEqual(off.status, 501)
        let error = try XCTUnwrap(try json(off)["error"] as? [String: Any])
        XCTAssertEqual(error["message"] as? String, "image generation is off: the server was started without a VAE folder (--vae)")
        XCTAssertEqual(error["type"] as? String, "server_error")
    }
}
