/// A problem loading a tokenizer or preparing a prompt.
///
/// The description names the file and, where there is one, the field:
/// `"/models/janus/tokenizer.json: field 'model.type': unsupported model type 'WordPiece' (only BPE)"`.
public struct TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What went wrong, for callers that want to react to it.
    public enum Kind: Equatable, Sendable {
        /// The file does not exist or cannot be read.
        case fileNotFound
        /// The file is not valid JSON (the reason carries the line and column).
        case invalidJSON
        /// A field is missing or has the wrong type or an impossible value.
        case invalidField
        /// The file is valid but uses a feature this implementation does not have.
        case unsupported
        /// A token the caller needs is not in the vocabulary.
        case missingToken
    }

    /// What kind of failure it is.
    public let kind: Kind
    /// The file (path or a name given by the caller).
    public let file: String
    /// The JSON field, as a dotted path such as `pre_tokenizer.pretokenizers.1.pattern`, when there is one.
    public let field: String?
    /// What is wrong, in words.
    public let reason: String

    /// Creates an error about `file` (and `field`, if given) with `reason`.
    public init(_ kind: Kind, file: String, field: String? = nil, reason: String) {
        self.kind = kind
        self.file = file
        self.field = field
        self.reason = reason
    }

    /// `file: field 'field': reason`, or `file: reason` when no field is involved.
    public var description: String {
        if let field { return "\(file): field '\(field)': \(reason)" }
        return "\(file): \(reason)"
    }

    /// The same text as `description`.
    public var message: String { description }
}
