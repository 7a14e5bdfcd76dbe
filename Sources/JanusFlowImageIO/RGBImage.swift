import CImageCodecs
import Foundation

/// A problem reading or writing an image; the message names the file.
public struct ImageError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An 8-bit RGB image, row-major, channels interleaved (HWC).
public struct RGBImage: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "RGBImage: \(pixels.count) bytes for \(width)x\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8) = (0, 0, 0)) {
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            pixels[3 * i] = fill.0
            pixels[3 * i + 1] = fill.1
            pixels[3 * i + 2] = fill.2
        }
    }

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

    /// Reads a PNG or JPEG file (detected by its first bytes, not its name).
    public init(contentsOf url: URL) throws {
        let path = url.path
        guard let handle = FileHandle(forReadingAtPath: path) else { throw ImageError("\(path): file not found or not readable") }
        let magic = [UInt8](handle.readData(ofLength: 8))
        try? handle.close()
        var image = ic_image()
        var error = [CChar](repeating: 0, count: 512)
        let rc: Int32
        if magic.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
            rc = ic_read_png(path, &image, &error, Int32(error.count))
        } else if magic.starts(with: [0xFF, 0xD8, 0xFF]) {
            rc = ic_read_jpeg(path, &image, &error, Int32(error.count))
        } else if magic.isEmpty {
            throw ImageError("\(path): empty file")
        } else {
            throw ImageError("\(path): not a PNG or JPEG file (\(RGBImage.describeFormat(magic)))")
        }
        guard rc == 0 else { throw ImageError("\(path): \(String(cString: error))") }
        defer { ic_free(&image) }
        width = Int(image.width)
        height = Int(image.height)
        pixels = Array(UnsafeBufferPointer(start: image.pixels, count: width * height * 3))
    }

    static func describeFormat(_ magic: [UInt8]) -> String {
        if magic.starts(with: Array("GIF8".utf8)) { return "GIF" }
        if magic.starts(with: Array("BM".utf8)) { return "BMP" }
        if magic.starts(with: Array("RIFF".utf8)) { return "RIFF/WebP" }
        if magic.starts(with: [0x49, 0x49, 0x2A, 0x00]) || magic.starts(with: [0x4D, 0x4D, 0x00, 0x2A]) { return "TIFF" }
        return "unrecognised signature"
    }

    /// Writes an 8-bit RGB PNG atomically (a temporary file in the same folder, then a rename).
    public func writePNG(to url: URL) throws {
        let dir = url.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier).tmp")
        var error = [CChar](repeating: 0, count: 512)
        let rc = pixels.withUnsafeBufferPointer { ic_write_png(tmp.path, $0.baseAddress, Int32(width), Int32(height), &error, Int32(error.count)) }
        guard rc == 0 else {
            try? FileManager.default.removeItem(at: tmp)
            throw ImageError("\(url.path): \(String(cString: error))")
        }
        guard rename(tmp.path, url.path) == 0 else {
            try? FileManager.default.removeItem(at: tmp)
            throw ImageError("\(url.path): could not move the written file into place (errno \(errno))")
        }
    }

    /// Copies `other` onto this image with its top-left corner at (x, y).
    public mutating func paste(_ other: RGBImage, x: Int, y: Int) {
        for row in 0..<other.height where y + row >= 0 && y + row < height {
            for col in 0..<other.width where x + col >= 0 && x + col < width {
                self[x: x + col, y: y + row] = other[x: col, y: row]
            }
        }
    }

    /// Tiles images into a grid (row-major) with a gap between them.
    public static func grid(_ images: [RGBImage], columns: Int, gap: Int = 2, background: (UInt8, UInt8, UInt8) = (255, 255, 255)) -> RGBImage {
        guard let first = images.first else { return RGBImage(width: 1, height: 1, fill: background) }
        let rows = (images.count + columns - 1) / columns
        let cols = Swift.min(columns, images.count)
        var out = RGBImage(width: cols * first.width + (cols + 1) * gap, height: rows * first.height + (rows + 1) * gap, fill: background)
        for (i, image) in images.enumerated() {
            out.paste(image, x: gap + (i % columns) * (first.width + gap), y: gap + (i / columns) * (first.height + gap))
        }
        return out
    }
}
