/// One turn of a conversation. Roles are the texts the official demos use: "User" and "Assistant".
public struct ChatMessage: Equatable, Sendable, Codable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    public static func user(_ content: String) -> ChatMessage { ChatMessage(role: "User", content: content) }
    public static func assistant(_ content: String) -> ChatMessage { ChatMessage(role: "Assistant", content: content) }
}

/// DeepSeek's "deepseek" SFT format as JanusFlow's VLChatProcessor renders it.
public enum ChatTemplate {
    public static let systemPrompt = "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language."
    public static let imageTag = "<image_placeholder>"
    public static let beginOfImage = "<begin_of_image>"
    public static let endOfImage = "<end_of_image>"
    public static let beginOfGeneration = "<｜begin▁of▁generation｜>"
    public static let endOfSentence = "<｜end▁of▁sentence｜>"

    /// System text and a blank line (if any), then `Role: content` with separators alternating "\n\n" (after
    /// the 1st, 3rd, ... message) and the end-of-sentence string (after the 2nd, 4th, ...); an empty message is
    /// just `Role:`. Contents and the result are stripped of surrounding whitespace.
    public static func render(_ messages: [ChatMessage], systemPrompt: String = ChatTemplate.systemPrompt) -> String {
        var text = systemPrompt.isEmpty ? "" : systemPrompt + "\n\n"
        for (i, m) in messages.enumerated() {
            let content = m.content.trimmingWhitespace
            if content.isEmpty {
                text += m.role + ":"
            } else {
                text += m.role + ": " + content + (i % 2 == 0 ? "\n\n" : endOfSentence)
            }
        }
        return text.trimmingWhitespace
    }

    /// The demo's understanding prompt for one image and a question.
    public static func understandingPrompt(question: String, history: [ChatMessage] = []) -> String {
        render(history + [.user(imageTag + "\n" + question), .assistant("")])
    }

    /// The generation prompt: empty system prompt, `User: <prompt>\n\nAssistant:`, then the image-start tag
    /// (its embedding is replaced by the time embedding).
    public static func generationPrompt(_ prompt: String) -> String {
        render([.user(prompt), .assistant("")], systemPrompt: "") + beginOfImage
    }
}

/// Token ids of chat prompts with image blocks expanded (VLChatProcessor).
public struct ChatProcessor: Sendable {
    public let tokenizer: Tokenizer
    public let imageTokens: Int
    public let imageTagID: Int
    public let beginOfImageID: Int
    public let endOfImageID: Int

    /// The result of processing: ids and the masks `prepare_inputs_embeds` needs.
    public struct Prompt: Equatable {
        public var ids: [Int]
        /// True at each `<begin_of_image>` and at the placeholders that receive image tokens.
        public var imageSeqMask: [Bool]
        public var imageCount: Int
    }

    public init(tokenizer: Tokenizer, imageTokens: Int = 576) throws {
        self.tokenizer = tokenizer
        self.imageTokens = imageTokens
        func id(_ token: String) throws -> Int {
            guard let id = tokenizer.tokenID(for: token) else {
                throw TokenizerError("\(tokenizer.source): the vocabulary has no '\(token)' token")
            }
            return id
        }
        imageTagID = try id(ChatTemplate.imageTag)
        beginOfImageID = try id(ChatTemplate.beginOfImage)
        endOfImageID = try id(ChatTemplate.endOfImage)
    }

    /// Encodes with BOS and replaces every image tag by `<begin_of_image>`, N placeholders, `<end_of_image>`.
    public func process(_ text: String) -> Prompt {
        var ids: [Int] = []
        var mask: [Bool] = []
        var images = 0
        for id in tokenizer.encode(text) {
            if id == imageTagID {
                ids.append(beginOfImageID)
                ids.append(contentsOf: Array(repeating: imageTagID, count: imageTokens))
                ids.append(endOfImageID)
                mask.append(contentsOf: [true] + Array(repeating: true, count: imageTokens) + [false])
                images += 1
            } else {
                ids.append(id)
                mask.append(false)
            }
        }
        return Prompt(ids: ids, imageSeqMask: mask, imageCount: images)
    }

    /// A prompt plus its response for training: the response (a leading space, the answer, end of sentence)
    /// is tokenized separately so its tokens are known exactly; `labelMask` marks them.
    public func processForTraining(conversation: [ChatMessage], systemPrompt: String = ChatTemplate.systemPrompt)
        -> (prompt: Prompt, labelMask: [Bool])
    {
        var prefix = conversation
        let answer = prefix.removeLast()
        var p = process(ChatTemplate.render(prefix + [ChatMessage(role: answer.role, content: "")], systemPrompt: systemPrompt))
        let response = tokenizer.encode(" " + answer.content.trimmingWhitespace, addBOS: false) + [tokenizer.eosID]
        let labels = Array(repeating: false, count: p.ids.count) + Array(repeating: true, count: response.count)
        p.ids += response
        p.imageSeqMask += Array(repeating: false, count: response.count)
        return (p, labels)
    }

    /// The generation prompt's ids (BOS first, the image-start tag last).
    public func generationIDs(_ prompt: String) -> [Int] { tokenizer.encode(ChatTemplate.generationPrompt(prompt)) }
}

extension String {
    /// Strips what Python's str.strip() strips (Unicode whitespace).
    var trimmingWhitespace: String {
        let scalars = Array(unicodeScalars)
        var lo = 0, hi = scalars.count
        while lo < hi && scalars[lo].properties.isWhitespace { lo += 1 }
        while hi > lo && scalars[hi - 1].properties.isWhitespace { hi -= 1 }
        return String(String.UnicodeScalarView(scalars[lo..<hi]))
    }
}
