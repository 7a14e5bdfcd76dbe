import CImageCodecs
import Foundation

/// A problem reading or writing an image. `message` names the file.
public struct ImageError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The category of a failure, for callers that react to it.
    public enum Kind: Sendable, Equatable {
        /// What went wrong, by case.
        ///
        /// - `notFound`: there is no such file.
        /// - `unreadable`: the path is a folder, or the file cannot be read.
        /// - `empty`: the file or data has no bytes.
        /// - `unsupportedFormat`: the data is neither PNG nor JPEG (the message says what it looks like).
        /// - `truncated`: the data ends before the image does.
        /// - `corrupt`: the PNG or JPEG decoder rejected the data.
        /// - `unsupported`: a valid file that cannot be converted to RGB here (a 2-component JPEG, say).
        /// - `outOfMemory`: allocation failed or the image is too large.
        /// - `writeFailed`: a PNG could not be encoded, written or moved into place.
        /// - `invalidArgument`: bad arguments, such as an image with no pixels to encode.
        case notFound, unreadable, empty, unsupportedFormat, truncated, corrupt, unsupported, outOfMemory, writeFailed,
            invalidArgument
    }

    /// What kind of failure it is.
    public let kind: Kind
    /// A readable explanation, starting with the file's path or name where there is one.
    public let message: String

    /// Creates an error of `kind` with `message`.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// The message.
    public var description: String { message }
}

/// The image file formats read here, recognised by their first bytes.
public enum ImageFileFormat: String, Sendable {
    /// PNG, whose files start with the 8 bytes 89 50 4E 47 0D 0A 1A 0A.
    case png = "PNG"
    /// JPEG, whose files start with FF D8 FF.
    case jpeg = "JPEG"

    static let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    static let jpegSignature: [UInt8] = [0xFF, 0xD8, 0xFF]

    /// The format whose signature `bytes` starts with, if any.
    public static func detect<Bytes: Collection>(_ bytes: Bytes) -> ImageFileFormat? where Bytes.Element == UInt8 {
        if bytes.starts(with: pngSignature) { return .png }
        if bytes.starts(with: jpegSignature) { return .jpeg }
        return nil
    }

    /// What a file that is neither PNG nor JPEG looks like, for error messages.
    static func describeOther(_ head: [UInt8]) -> String {
        func starts(_ s: String) -> Bool { head.starts(with: Array(s.utf8)) }
        if starts("GIF87a") || starts("GIF89a") { return "GIF image" }
        if starts("BM") { return "BMP image" }
        if starts("RIFF") && head.count >= 12 && Array(head[8..<12]) == Array("WEBP".utf8) { return "WebP image" }
        if head.starts(with: [0x49, 0x49, 0x2A, 0x00]) || head.starts(with: [0x4D, 0x4D, 0x00, 0x2A]) { return "TIFF image" }
        if head.count >= 12 && Array(head[4..<8]) == Array("ftyp".utf8) { return "HEIF/AVIF/MP4 container" }
        if starts("%PDF") { return "PDF document" }
        if starts("<svg") || starts("<?xml") { return "SVG/XML text" }
        let text = head.allSatisfy { ($0 >= 0x20 && $0 < 0x7F) || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D || $0 >= 0x80 }
        if text && String(validating: head, as: UTF8.self) != nil { return "text" }
        return "unrecognised signature"
    }
}

/// An 8-bit RGB image, rows top to bottom, channels interleaved (HWC).
public struct RGBImage: Equatable, Sendable {
    /// The width in pixels.
    public var width: Int
    /// The height in pixels.
    public var height: Int
    /// The RGB bytes, three per pixel, rows top to bottom.
    public var pixels: [UInt8]

    /// Wraps existing bytes; traps on a negative size or unless `pixels.count == width * height * 3`.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0, "RGBImage: negative size \(width)x\(height)")
        precondition(pixels.count == width * height * 3, "RGBImage: \(pixels.count) bytes for \(width)x\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// An image of one colour (black by default); traps on a negative size.
    public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8) = (0, 0, 0)) {
        precondition(width >= 0 && height >= 0, "RGBImage: negative size \(width)x\(height)")
        self.width = width
        self.height = height
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            pixels[3 * i] = fill.0
            pixels[3 * i + 1] = fill.1
            pixels[3 * i + 2] = fill.2
        }
        self.pixels = pixels
    }

    /// The (r, g, b) pixel at column `x`, row `y`; `x` is not checked against `width`, so an out-of-range
    /// `x` reaches into a neighbouring row.
    public subscript(x x: Int, y y: Int) -> (UInt8, UInt8, UInt8) {
        get {
            let i = (y * width + x) * 3
            return (pixels[i], pixels[i + 1], pixels[i + 2])
        }
        set {
            let i = (y * width + x) * 3
            pixels[i] = newValue.0
            pixels[i + 1] = newValue.1
            pixels[i + 2] = newValue.2
        }
    }

    /// Reads a PNG or JPEG file, recognised by its first bytes (not its name), as Pillow's
    /// `Image.open(path).convert("RGB")` would (see `image_codecs.h` for the conversions).
    public init(contentsOf url: URL) throws {
        let path = url.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ImageError(.notFound, "\(path): file not found")
        }
        if isDirectory.boolValue { throw ImageError(.unreadable, "\(path): is a directory, not an image file") }
        if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber, size.intValue == 0 {
            throw ImageError(.empty, "\(path): empty file, not an image")
        }
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            let reason = access(path, R_OK) != 0 ? String(cString: strerror(errno)) : "\(error.localizedDescription)"
            throw ImageError(.unreadable, "\(path): cannot read file (\(reason))")
        }
        try self.init(data: data, name: path)
    }

    /// Decodes PNG or JPEG bytes; `name` starts every error message.
    public init(data: Data, name: String = "image data") throws {
        let bytes = [UInt8](data)
        guard !bytes.isEmpty else { throw ImageError(.empty, "\(name): empty file, not an image") }
        guard let format = ImageFileFormat.detect(bytes) else {
            if bytes.count < 8 && ImageFileFormat.pngSignature.starts(with: bytes) {
                throw ImageError(.truncated, "\(name): truncated PNG file (data ends early)")
            }
            if bytes.count < 3 && ImageFileFormat.jpegSignature.starts(with: bytes) {
                throw ImageError(.truncated, "\(name): truncated JPEG file (data ends early)")
            }
            let what = ImageFileFormat.describeOther(Array(bytes.prefix(64)))
            throw ImageError(.unsupportedFormat, "\(name): not a PNG or JPEG file (\(what))")
        }
        var image = ic_image()
        var error = [CChar](repeating: 0, count: 512)
        let rc = bytes.withUnsafeBufferPointer { buffer in
            switch format {
            case .png: ic_decode_png(buffer.baseAddress, buffer.count, &image, &error, Int32(error.count))
            case .jpeg: ic_decode_jpeg(buffer.baseAddress, buffer.count, &image, &error, Int32(error.count))
            }
        }
        guard rc == 0 else {
            let message = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw ImageError(RGBImage.kind(of: rc), "\(name): \(message)")
        }
        defer { ic_free(&image) }
        width = Int(image.width)
        height = Int(image.height)
        pixels = Array(UnsafeBufferPointer(start: image.pixels, count: width * height * 3))
    }

    static func kind(of code: Int32) -> ImageError.Kind {
        switch Int(code) {
        case Int(IC_ERR_IO): return .unreadable
        case Int(IC_ERR_TRUNCATED): return .truncated
        case Int(IC_ERR_UNSUPPORTED): return .unsupported
        case Int(IC_ERR_MEMORY): return .outOfMemory
        case Int(IC_ERR_ARGUMENT): return .invalidArgument
        default: return .corrupt
        }
    }

    /// Writes an 8-bit RGB PNG atomically: a temporary file in the same folder (created if missing), flushed, then
    /// renamed over `url`, so readers never see a partial file.
    public func writePNG(to url: URL) throws {
        guard width > 0, height > 0 else {
            throw ImageError(.invalidArgument, "\(url.path): cannot write an empty \(width)x\(height) image")
        }
        let directory = url.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw ImageError(.writeFailed, "\(url.path): cannot create the folder \(directory.path)")
        }
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        var error = [CChar](repeating: 0, count: 512)
        let rc = pixels.withUnsafeBufferPointer {
            ic_write_png(temporary.path, $0.baseAddress, Int32(width), Int32(height), &error, Int32(error.count))
        }
        guard rc == 0 else {
            unlink(temporary.path)
            let message = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw ImageError(.writeFailed, "\(url.path): \(message)")
        }
        guard rename(temporary.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary.path)
            throw ImageError(.writeFailed, "\(url.path): cannot move the written file into place (\(reason))")
        }
    }

    /// The image as an 8-bit RGB PNG file's bytes (what `writePNG` writes).
    public func pngData() throws -> Data {
        guard width > 0, height > 0 else { throw ImageError(.invalidArgument, "cannot encode an empty \(width)x\(height) image") }
        var error = [CChar](repeating: 0, count: 512)
        var bytes: UnsafeMutablePointer<UInt8>?
        var size = 0
        let rc = pixels.withUnsafeBufferPointer {
            ic_encode_png($0.baseAddress, Int32(width), Int32(height), &bytes, &size, &error, Int32(error.count))
        }
        guard rc == 0, let bytes else {
            throw ImageError(.writeFailed, String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        defer { free(bytes) }
        return Data(bytes: bytes, count: size)
    }

    /// Copies `other` onto this image with its top-left corner at (x, y), clipped to this image.
    public mutating func paste(_ other: RGBImage, x: Int, y: Int) {
        let x0 = Swift.max(x, 0), x1 = Swift.min(x + other.width, width)
        guard x0 < x1 else { return }
        for row in Swift.max(y, 0)..<Swift.max(Swift.max(y, 0), Swift.min(y + other.height, height)) {
            let dst = (row * width + x0) * 3
            let src = ((row - y) * other.width + (x0 - x)) * 3
            pixels.replaceSubrange(dst..<(dst + (x1 - x0) * 3), with: other.pixels[src..<(src + (x1 - x0) * 3)])
        }
    }

    /// Tiles images into a grid (row-major) with a gap between them; cells take the first image's size.
    public static func grid(_ images: [RGBImage], columns: Int, gap: Int = 2, background: (UInt8, UInt8, UInt8) = (255, 255, 255)) -> RGBImage {
        guard let first = images.first, columns > 0 else { return RGBImage(width: 1, height: 1, fill: background) }
        let rows = (images.count + columns - 1) / columns
        let cols = Swift.min(columns, images.count)
        var out = RGBImage(width: cols * first.width + (cols + 1) * gap, height: rows * first.height + (rows + 1) * gap, fill: background)
        for (i, image) in images.enumerated() {
            out.paste(image, x: gap + (i % columns) * (first.width + gap), y: gap + (i / columns) * (first.height + gap))
        }
        return out
    }
}
