/// One turn of a conversation. Roles are the texts the official demos use: "User" and "Assistant".
public struct ChatMessage: Hashable, Sendable, Codable {
    /// "User" or "Assistant"; any other text is rendered as given.
    public var role: String
    /// The message text; for user turns, `<image_placeholder>` marks where each image goes.
    public var content: String

    /// Creates a message with any role text.
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    /// A "User" message.
    public static func user(_ content: String) -> ChatMessage { ChatMessage(role: "User", content: content) }
    /// An "Assistant" message (empty content ends a prompt with `Assistant:`).
    public static func assistant(_ content: String) -> ChatMessage { ChatMessage(role: "Assistant", content: content) }
}

/// DeepSeek's "deepseek" SFT format as JanusFlow's `VLChatProcessor` renders it (`janus/utils/conversation.py`,
/// separator style DeepSeek, separators `"\n\n"` and `"<｜end▁of▁sentence｜>"`).
public enum ChatTemplate {
    /// `VLChatProcessor.system_prompt`, used for understanding prompts.
    public static let systemPrompt = "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language."
    /// The tag a user message carries for each image; the processor expands it into the image block.
    public static let imageTag = "<image_placeholder>"
    /// Opens each image block, and ends generation prompts by default.
    public static let beginOfImage = "<begin_of_image>"
    /// Closes each image block.
    public static let endOfImage = "<end_of_image>"
    /// The generation tag the repository README ends generation prompts with.
    public static let beginOfGeneration = "<｜begin▁of▁generation｜>"
    /// DeepSeek's end-of-sentence token text, the separator after each assistant turn.
    public static let endOfSentence = "<｜end▁of▁sentence｜>"
    /// The two separators, used alternately after the 1st, 3rd, ... and the 2nd, 4th, ... message.
    public static let separators = ["\n\n", endOfSentence]

    /// The prompt text: the system text and a blank line (only if the system text is non-empty), then each message
    /// as `Role: content` followed by the separators in turn; a message with empty content is just `Role:` (no
    /// separator). Each content and the final string are stripped of surrounding whitespace (Python's
    /// `str.strip()`).
    public static func render(_ messages: [ChatMessage], systemPrompt: String = ChatTemplate.systemPrompt) -> String {
        var text = systemPrompt.isEmpty ? "" : systemPrompt + separators[0]
        for (i, m) in messages.enumerated() {
            let content = m.content.trimmingPythonWhitespace
            if content.isEmpty {
                text += m.role + ":"
            } else {
                text += m.role + ": " + content + separators[i % 2]
            }
        }
        return text.trimmingPythonWhitespace
    }

    /// The demo's understanding prompt: `<system>\n\nUser: <image_placeholder>\n<question>\n\nAssistant:` after
    /// the earlier turns of `history` (pairs of user and assistant messages).
    public static func understandingPrompt(question: String, history: [ChatMessage] = []) -> String {
        render(history + [.user(imageTag + "\n" + question), .assistant("")])
    }

    /// The generation prompt: empty system prompt, `User: <prompt>\n\nAssistant:`, then `tag` (the demo app's
    /// `<begin_of_image>` by default; the repository README uses `<｜begin▁of▁generation｜>`, which gives the same
    /// model inputs because the last token's embedding is replaced by the time embedding).
    public static func generationPrompt(_ prompt: String, tag: String = ChatTemplate.beginOfImage) -> String {
        render([.user(prompt), .assistant("")], systemPrompt: "") + tag
    }
}

/// Token ids of chat prompts with image blocks expanded, as JanusFlow's `VLChatProcessor` makes them.
public struct ChatProcessor: Sendable {
    /// The tokenizer, with the image and generation tags added as special tokens if the file lacked them.
    public let tokenizer: Tokenizer
    /// Image tokens per image: 576 for the release (24 x 24 SigLIP patches).
    public let imageTokens: Int
    /// The id of `<image_placeholder>`, also filling each of the N image positions.
    public let imageTagID: Int
    /// The id of `<begin_of_image>`.
    public let beginOfImageID: Int
    /// The id of `<end_of_image>`.
    public let endOfImageID: Int
    /// The id of `<｜begin▁of▁generation｜>`.
    public let beginOfGenerationID: Int
    /// `<｜▁pad▁｜>`, or EOS.
    public var padID: Int { tokenizer.padID }

    /// One processed prompt.
    public struct Prompt: Equatable, Sendable {
        /// BOS, the prompt, each image tag replaced by `<begin_of_image>`, N placeholders, `<end_of_image>`.
        public var ids: [Int]
        /// True at every `<begin_of_image>` and `<image_placeholder>` id (N + 1 positions per image):
        /// `images_seq_mask`.
        public var imageSeqMask: [Bool]
        /// The number of images in the prompt.
        public var imageCount: Int
        /// N + 1 per image (the begin tag and the placeholders).
        public var imageEmbeddingCount: Int
        /// `images_emb_mask` of this prompt alone: one row of N + 1 true values per image.
        public var imageEmbMask: [[Bool]] { Array(repeating: Array(repeating: true, count: imageEmbeddingCount), count: imageCount) }
    }

    /// Several prompts left-padded to one length, as `VLChatProcessor.batchify` makes them.
    public struct Batch: Equatable, Sendable {
        /// Rows of equal length, padded on the left with the pad id.
        public var ids: [[Int]]
        /// 1 on real tokens, 0 on padding.
        public var attentionMask: [[Int]]
        /// Each row's `Prompt.imageSeqMask`, false on the padding.
        public var imageSeqMask: [[Bool]]
        /// (rows, max(1, most images in a row), N + 1): true for the images each row has.
        public var imageEmbMask: [[[Bool]]]
    }

    /// Finds (or, like `VLChatProcessor`, adds as special tokens, in its order) the image tag, the generation
    /// tag and the image begin/end tags. Throws when `imageTokens` is negative.
    public init(tokenizer: Tokenizer, imageTokens: Int = 576) throws {
        guard imageTokens >= 0 else {
            throw TokenizerError(.invalidField, file: tokenizer.source, field: "num_image_tokens", reason: "must not be negative (\(imageTokens))")
        }
        let tags = [ChatTemplate.imageTag, ChatTemplate.beginOfGeneration, ChatTemplate.beginOfImage, ChatTemplate.endOfImage]
        let t = tags.allSatisfy { tokenizer.tokenID(for: $0) != nil } ? tokenizer : tokenizer.addingSpecialTokens(tags)
        self.tokenizer = t
        self.imageTokens = imageTokens
        imageTagID = t.tokenID(for: ChatTemplate.imageTag)!
        beginOfGenerationID = t.tokenID(for: ChatTemplate.beginOfGeneration)!
        beginOfImageID = t.tokenID(for: ChatTemplate.beginOfImage)!
        endOfImageID = t.tokenID(for: ChatTemplate.endOfImage)!
    }

    /// Encodes `text` with BOS and replaces every image tag by `<begin_of_image>`, N placeholders and
    /// `<end_of_image>`.
    public func process(_ text: String) -> Prompt { process(text, addBOS: true) }

    func process(_ text: String, addBOS: Bool) -> Prompt {
        var ids: [Int] = []
        var images = 0
        for id in tokenizer.encode(text, addBOS: addBOS) {
            if id == imageTagID {
                ids.append(beginOfImageID)
                ids.append(contentsOf: repeatElement(imageTagID, count: imageTokens))
                ids.append(endOfImageID)
                images += 1
            } else {
                ids.append(id)
            }
        }
        let mask = ids.map { $0 == imageTagID || $0 == beginOfImageID }
        return Prompt(ids: ids, imageSeqMask: mask, imageCount: images, imageEmbeddingCount: imageTokens + 1)
    }

    /// Renders and processes a conversation (`VLChatProcessor(conversations:)`).
    public func process(conversation: [ChatMessage], systemPrompt: String = ChatTemplate.systemPrompt) -> Prompt {
        process(ChatTemplate.render(conversation, systemPrompt: systemPrompt))
    }

    /// Left-pads prompts to a batch.
    public func batch(_ prompts: [Prompt]) -> Batch {
        let length = prompts.map(\.ids.count).max() ?? 0
        let maxImages = Swift.max(1, prompts.map(\.imageCount).max() ?? 0)
        var batch = Batch(ids: [], attentionMask: [], imageSeqMask: [], imageEmbMask: [])
        for p in prompts {
            let pad = length - p.ids.count
            batch.ids.append(Array(repeating: padID, count: pad) + p.ids)
            batch.attentionMask.append(Array(repeating: 0, count: pad) + Array(repeating: 1, count: p.ids.count))
            batch.imageSeqMask.append(Array(repeating: false, count: pad) + p.imageSeqMask)
            batch.imageEmbMask.append((0..<maxImages).map { Array(repeating: $0 < p.imageCount, count: imageTokens + 1) })
        }
        return batch
    }

    /// A conversation for training, with every assistant reply as a target (as LLaVA-style multi-turn data is
    /// trained): each reply (a leading space, the text, end of sentence) is tokenized separately so its tokens are
    /// known exactly, and `labelMask` marks them. The last message is always a target; an earlier message is one
    /// when it is an Assistant turn at an odd index (the alternating User/Assistant layout, where end of sentence
    /// follows it). The ids equal those of the whole conversation rendered and processed at once.
    public func processForTraining(conversation: [ChatMessage], systemPrompt: String = ChatTemplate.systemPrompt)
        -> (prompt: Prompt, labelMask: [Bool])
    {
        var p = Prompt(ids: [], imageSeqMask: [], imageCount: 0, imageEmbeddingCount: imageTokens + 1)
        var labels: [Bool] = []
        var start = 0
        let targets = conversation.indices.filter {
            $0 == conversation.count - 1 || ($0 % 2 == 1 && conversation[$0].role == ChatMessage.assistant("").role)
        }
        for t in targets {
            // Later chunks start at an even index, so the separators alternate as in one rendering.
            let context = Array(conversation[start..<t]) + [ChatMessage(role: conversation[t].role, content: "")]
            let chunk = process(ChatTemplate.render(context, systemPrompt: start == 0 ? systemPrompt : ""), addBOS: start == 0)
            let response = tokenizer.encode(" " + conversation[t].content.trimmingPythonWhitespace, addBOS: false) + [tokenizer.eosID]
            p.ids += chunk.ids + response
            p.imageSeqMask += chunk.imageSeqMask + Array(repeating: false, count: response.count)
            p.imageCount += chunk.imageCount
            labels += Array(repeating: false, count: chunk.ids.count) + Array(repeating: true, count: response.count)
            start = t + 1
        }
        return (p, labels)
    }

    /// The generation prompt's ids: BOS first, the image-start tag last.
    public func generationIDs(_ prompt: String) -> [Int] { tokenizer.encode(ChatTemplate.generationPrompt(prompt)) }

    /// The classifier-free-guidance unconditional row: BOS kept, every later id replaced by the pad id.
    public func unconditionalIDs(_ promptIDs: [Int]) -> [Int] {
        guard let first = promptIDs.first else { return [] }
        return [first] + Array(repeating: padID, count: promptIDs.count - 1)
    }

    /// The 2B token rows of a guided generation: B copies of the prompt, then B unconditional rows.
    public func guidanceRows(_ promptIDs: [Int], images: Int) -> [[Int]] {
        Array(repeating: promptIDs, count: images) + Array(repeating: unconditionalIDs(promptIDs), count: images)
    }
}

extension Unicode.Scalar {
    /// Python's `str.isspace()`: Unicode White_Space plus the information separators U+001C-U+001F.
    var isPythonWhitespace: Bool { properties.isWhitespace || (0x1C...0x1F).contains(value) }
}

extension String {
    /// What Python's `str.strip()` strips.
    var trimmingPythonWhitespace: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.isPythonWhitespace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.isPythonWhitespace })!
        return String(scalars[first...last])
    }
}
