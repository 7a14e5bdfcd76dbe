import Foundation
import JanusFlowImageIO
import XCTest

let fixtureDir = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

/// The tensors of a safetensors file (F32, I64 and U8), enough for the fixtures here.
struct SafetensorsFile {
    var shapes: [String: [Int]] = [:]
    var floats: [String: [Float]] = [:]
    var ints: [String: [Int64]] = [:]

    init(_ url: URL) throws {
        let blob = [UInt8](try Data(contentsOf: url))
        let headerLength = blob[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        let header = try JSONSerialization.jsonObject(with: Data(blob[8..<(8 + headerLength)])) as! [String: Any]
        let base = 8 + headerLength
        for (name, value) in header where name != "__metadata__" {
            let entry = value as! [String: Any]
            let offsets = entry["data_offsets"] as! [Int]
            let bytes = Array(blob[(base + offsets[0])..<(base + offsets[1])])
            shapes[name] = entry["shape"] as? [Int]
            switch entry["dtype"] as! String {
            case "F32": floats[name] = bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)).map { Float(bitPattern: UInt32(littleEndian: $0)) } }
            case "I64": ints[name] = bytes.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)).map { Int64(littleEndian: $0) } }
            case "U8": ints[name] = bytes.map { Int64($0) }
            case let other: throw NSError(domain: "safetensors", code: 1, userInfo: [NSLocalizedDescriptionKey: "dtype \(other)"])
            }
        }
    }
}

/// Equal byte arrays, reporting the first difference instead of both arrays.
func assertSameBytes(_ actual: [UInt8], _ expected: [UInt8], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
    guard actual != expected else { return }
    if actual.count != expected.count { return XCTFail("\(label): \(actual.count) bytes, expected \(expected.count)", file: file, line: line) }
    let i = actual.indices.first { actual[$0] != expected[$0] }!
    let differing = zip(actual, expected).filter { $0 != $1 }.count
    XCTFail("\(label): \(differing) bytes differ, first at \(i): \(actual[i]) vs \(expected[i])", file: file, line: line)
}

func temporaryDirectory(_ label: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// Expected bytes come from Pillow 13.0.0 (Fixtures/make_fixtures.py) and from DeepSeek's official preprocessing
/// (Fixtures/preprocess.safetensors); see Fixtures/README.md.
final class ImageIOTests: XCTestCase {
    let index = try! JSONSerialization.jsonObject(with: Data(contentsOf: fixtureDir.appendingPathComponent("index.json"))) as! [String: Any]

    func bytes(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: fixtureDir.appendingPathComponent(name))) }

    func assertError(_ expression: @autoclosure () throws -> RGBImage, _ kind: ImageError.Kind, _ message: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try expression(), file: file, line: line) { error in
            guard let error = error as? ImageError else { return XCTFail("not an ImageError: \(error)", file: file, line: line) }
            XCTAssertEqual(error.kind, kind, file: file, line: line)
            XCTAssertEqual(error.message, message, file: file, line: line)
            XCTAssertEqual("\(error)", message, file: file, line: line)
        }
    }

    // MARK: decoding

    func testDecodesLikePillowConvertRGB() throws {
        let cases = index["decode"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 31)
        for c in cases {
            let name = c["file"] as! String
            let image = try RGBImage(contentsOf: fixtureDir.appendingPathComponent(name))
            XCTAssertEqual(image.width, c["width"] as? Int, name)
            XCTAssertEqual(image.height, c["height"] as? Int, name)
            assertSameBytes(image.pixels, try bytes(name + ".rgb"), name)
            // The same bytes through the in-memory entry point.
            XCTAssertEqual(try RGBImage(data: Data(try bytes(name)), name: name), image, name)
        }
    }

    func testFormatIsDetectedByContentNotName() throws {
        let dir = try temporaryDirectory("names")
        defer { try? FileManager.default.removeItem(at: dir) }
        let jpegNamedPNG = dir.appendingPathComponent("photo.png")
        try Data(try bytes("photo.jpg")).write(to: jpegNamedPNG)
        XCTAssertEqual(try RGBImage(contentsOf: jpegNamedPNG).pixels, try bytes("photo.jpg.rgb"))
        XCTAssertEqual(ImageFileFormat.detect(try bytes("rgb.png")), .png)
        XCTAssertEqual(ImageFileFormat.detect(try bytes("cmyk.jpg")), .jpeg)
        XCTAssertNil(ImageFileFormat.detect(Array("GIF89a".utf8)))
    }

    // MARK: errors

    func testBadFilesGiveClearErrors() throws {
        let dir = try temporaryDirectory("bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        func file(_ name: String, _ contents: [UInt8]) throws -> URL {
            let url = dir.appendingPathComponent(name)
            try Data(contents).write(to: url)
            return url
        }
        let missing = dir.appendingPathComponent("missing.png")
        assertError(try RGBImage(contentsOf: missing), .notFound, "\(missing.path): file not found")
        assertError(try RGBImage(contentsOf: dir), .unreadable, "\(dir.path): is a directory, not an image file")

        let text = try file("notes.png", Array("hello, not an image\n".utf8))
        assertError(try RGBImage(contentsOf: text), .unsupportedFormat, "\(text.path): not a PNG or JPEG file (text)")
        let gif = try file("anim.gif", Array("GIF89a".utf8) + [1, 0, 1, 0, 0x80, 0, 0])
        assertError(try RGBImage(contentsOf: gif), .unsupportedFormat, "\(gif.path): not a PNG or JPEG file (GIF image)")
        let bmp = try file("pic.jpg", Array("BM".utf8) + [0x3A, 0, 0, 0, 0, 0, 0, 0])
        assertError(try RGBImage(contentsOf: bmp), .unsupportedFormat, "\(bmp.path): not a PNG or JPEG file (BMP image)")
        let binary = try file("noise.png", [0x00, 0x01, 0xFE, 0x9C, 0x42])
        assertError(try RGBImage(contentsOf: binary), .unsupportedFormat, "\(binary.path): not a PNG or JPEG file (unrecognised signature)")
        let empty = try file("empty.jpg", [])
        assertError(try RGBImage(contentsOf: empty), .empty, "\(empty.path): empty file, not an image")

        let png = try bytes("rgb.png")
        let truncated = try file("truncated.png", Array(png.prefix(png.count / 2)))
        assertError(try RGBImage(contentsOf: truncated), .truncated, "\(truncated.path): truncated PNG file (data ends early)")
        let signatureOnly = try file("sig.png", Array(png.prefix(5)))
        assertError(try RGBImage(contentsOf: signatureOnly), .truncated, "\(signatureOnly.path): truncated PNG file (data ends early)")
        var damaged = png
        damaged[29] ^= 0xFF  // the IHDR chunk's CRC
        let corrupt = try file("corrupt.png", damaged)
        assertError(try RGBImage(contentsOf: corrupt), .corrupt, "\(corrupt.path): corrupt PNG file (libpng: IHDR: CRC error)")
        var badZlib = png
        badZlib[png.count - 20] ^= 0xFF  // the zlib checksum at the end of the IDAT data
        let badData = try file("baddata.png", badZlib)
        XCTAssertThrowsError(try RGBImage(contentsOf: badData)) { error in
            XCTAssertEqual((error as? ImageError)?.kind, .corrupt)
            XCTAssertTrue("\(error)".hasPrefix("\(badData.path): corrupt PNG file (libpng: IDAT: "), "\(error)")
        }

        let jpeg = try bytes("photo.jpg")
        let truncatedJPEG = try file("truncated.jpg", Array(jpeg.prefix(jpeg.count - 200)))
        assertError(try RGBImage(contentsOf: truncatedJPEG), .truncated, "\(truncatedJPEG.path): truncated JPEG file (data ends early)")
        let headerOnly = try file("header.jpg", Array(jpeg.prefix(40)))
        assertError(try RGBImage(contentsOf: headerOnly), .truncated, "\(headerOnly.path): truncated JPEG file (data ends early)")
        let garbage = try file("garbage.jpg", [0xFF, 0xD8, 0xFF] + [UInt8](repeating: 0x11, count: 64))
        XCTAssertThrowsError(try RGBImage(contentsOf: garbage)) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(garbage.path): "), "\(error)")
        }
        // In-memory data is named as given.
        assertError(try RGBImage(data: Data(), name: "upload"), .empty, "upload: empty file, not an image")
    }

    /// A few hundred bytes can declare a huge picture (the fuzzer's JPEG: 64000 x 2093 in 201 bytes). Past
    /// Pillow's limit of 178956970 pixels the decoder refuses before allocating, saying the size.
    func testDecompressionBombsAreRefusedBySize() throws {
        let fuzzFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/Regressions/JPEG")
        var bytes = [UInt8](try Data(contentsOf: fuzzFolder.appendingPathComponent("134-megapixels-in-201-bytes.jpg")))
        let frame = try XCTUnwrap((0..<(bytes.count - 1)).first { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xC0 })
        XCTAssertEqual(Array(bytes[(frame + 5)..<(frame + 9)]), [0x08, 0x2D, 0xFA, 0x00])  // height 2093, width 64000
        bytes[frame + 5] = 0x0B
        bytes[frame + 6] = 0xB8  // height 3000: 192 million pixels
        XCTAssertThrowsError(try RGBImage(data: Data(bytes), name: "bomb.jpg")) { error in
            XCTAssertEqual((error as? ImageError)?.kind, .outOfMemory)
            XCTAssertEqual("\(error)", "bomb.jpg: image too large (64000 x 3000 pixels; at most 178956970, as Pillow) or out of memory")
        }
    }

    func testTrailersAsPillowTreatsThem() throws {
        // Pillow decodes a PNG whose image data is complete but whose IEND chunk is missing, and rejects a JPEG
        // without its end-of-image marker as truncated.
        let png = try bytes("rgb.png")
        XCTAssertEqual(try RGBImage(data: Data(png.prefix(png.count - 12))).pixels, try bytes("rgb.png.rgb"))
        let jpeg = try bytes("photo.jpg")
        XCTAssertEqual(Array(jpeg.suffix(2)), [0xFF, 0xD9])
        assertError(try RGBImage(data: Data(jpeg.prefix(jpeg.count - 2)), name: "photo"), .truncated,
                    "photo: truncated JPEG file (data ends early)")
    }

    // MARK: writing

    func testPNGRoundTripOddSizesAndAtomicWrites() throws {
        let dir = try temporaryDirectory("png")
        defer { try? FileManager.default.removeItem(at: dir) }
        for (w, h) in [(1, 1), (7, 3), (33, 17), (3, 101)] {
            let pixels = (0..<(w * h * 3)).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ w &* 11 &+ $0 / 7) }
            let image = RGBImage(width: w, height: h, pixels: pixels)
            let url = dir.appendingPathComponent("img_\(w)x\(h).png")
            try image.writePNG(to: url)
            XCTAssertEqual(try RGBImage(contentsOf: url), image)
            // In memory: the same bytes as the file, and they decode back to the image.
            let encoded = try image.pngData()
            XCTAssertEqual(encoded, try Data(contentsOf: url))
            XCTAssertEqual(try RGBImage(data: encoded), image)
        }
        XCTAssertThrowsError(try RGBImage(width: 0, height: 3, pixels: []).pngData()) {
            XCTAssertEqual(($0 as? ImageError)?.message, "cannot encode an empty 0x3 image")
        }
        // Overwriting replaces the file whole; a missing folder is created; no temporary files stay behind.
        let url = dir.appendingPathComponent("img_7x3.png")
        try RGBImage(width: 2, height: 5, fill: (9, 8, 7)).writePNG(to: url)
        XCTAssertEqual(try RGBImage(contentsOf: url), RGBImage(width: 2, height: 5, fill: (9, 8, 7)))
        try RGBImage(width: 4, height: 4, fill: (1, 2, 3)).writePNG(to: dir.appendingPathComponent("sub/dir/x.png"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(),
                       ["img_1x1.png", "img_33x17.png", "img_3x101.png", "img_7x3.png", "sub"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("sub/dir").path), ["x.png"])
    }

    func testWriteErrorsNameTheFile() throws {
        let dir = try temporaryDirectory("write")
        defer { try? FileManager.default.removeItem(at: dir) }
        let blocker = dir.appendingPathComponent("file")
        try Data("x".utf8).write(to: blocker)
        let target = blocker.appendingPathComponent("out.png")
        XCTAssertThrowsError(try RGBImage(width: 2, height: 2).writePNG(to: target)) { error in
            XCTAssertEqual((error as? ImageError)?.kind, .writeFailed)
            XCTAssertTrue("\(error)".hasPrefix("\(target.path): "), "\(error)")
        }
        let empty = dir.appendingPathComponent("empty.png")
        XCTAssertThrowsError(try RGBImage(width: 0, height: 3).writePNG(to: empty)) { error in
            XCTAssertEqual("\(error)", "\(empty.path): cannot write an empty 0x3 image")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["file"])
    }

    // MARK: resizing and preprocessing

    func testBicubicResizeMatchesPillowExactly() throws {
        let src = index["resize_source"] as! [String: Any]
        let source = RGBImage(width: src["width"] as! Int, height: src["height"] as! Int, pixels: try bytes(src["file"] as! String))
        let cases = index["resize"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 6)
        for c in cases {
            let (w, h) = (c["width"] as! Int, c["height"] as! Int)
            let out = PillowResize.resize(source, width: w, height: h)
            assertSameBytes(out.pixels, try bytes(c["file"] as! String), "\(w)x\(h)")
        }
        XCTAssertEqual(PillowResize.resize(source, width: source.width, height: source.height), source)
    }

    func testPassOrderFollowsThePillowVersion() throws {
        // Pillow 13: vertical first iff the height shrinks by more than twice as many pixels as the width.
        XCTAssertTrue(PillowResize.verticalFirst(from: (31, 203), to: (14, 64)))
        XCTAssertFalse(PillowResize.verticalFirst(from: (88, 82), to: (27, 24)))
        XCTAssertTrue(PillowResize.verticalFirst(from: (40, 100), to: (60, 50)))  // width grows, height shrinks
        XCTAssertFalse(PillowResize.verticalFirst(from: (45, 29), to: (64, 41)))
        XCTAssertFalse(PillowResize.verticalFirst(from: (31, 203), to: (14, 64), order: .horizontalFirst))
        // Pillow 12 bytes for resizes that Pillow 13 orders differently.
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureDir.appendingPathComponent("pillow12.json"))) as! [String: Any]
        let cases = json["resize"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 3)
        for c in cases {
            let source = RGBImage(width: c["width"] as! Int, height: c["height"] as! Int, pixels: try bytes(c["source"] as! String))
            let (w, h) = (c["to_width"] as! Int, c["to_height"] as! Int)
            let legacy = PillowResize.resize(source, width: w, height: h, order: .horizontalFirst)
            assertSameBytes(legacy.pixels, try bytes(c["file"] as! String), "Pillow 12 \(w)x\(h)")
            XCTAssertNotEqual(PillowResize.resize(source, width: w, height: h).pixels, legacy.pixels, "\(w)x\(h)")
        }
    }

    func testSquareImageMatchesPillowPipeline() throws {
        let cases = index["preprocess"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 4)
        for c in cases {
            let (w, h, size, side) = (c["width"] as! Int, c["height"] as! Int, c["size"] as! Int, c["side"] as! Int)
            let source = RGBImage(width: w, height: h, pixels: try bytes(c["source"] as! String))
            let square = ImagePreprocessor(size: size).squareImage(source)
            XCTAssertEqual([square.width, square.height], [side, side], "\(w)x\(h)")
            assertSameBytes(square.pixels, try bytes(c["square"] as! String), "\(w)x\(h) -> \(size)")
        }
    }

    func testPreprocessingMatchesOfficialProcessorExactly() throws {
        let fixture = try SafetensorsFile(fixtureDir.appendingPathComponent("preprocess.safetensors"))
        let pairs = [("pre.image_u8.0", "pre.pixel_values.0"), ("pre.image_u8.1", "pre.pixel_values.1"),
                     ("und.image_u8", "und.prompt_pixel_values")]
        let processor = ImagePreprocessor(size: 64, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        for (imageName, valuesName) in pairs {
            let shape = fixture.shapes[imageName]!
            let image = RGBImage(width: shape[1], height: shape[0], pixels: fixture.ints[imageName]!.map { UInt8($0) })
            let expected = fixture.floats[valuesName]!
            XCTAssertEqual(fixture.shapes[valuesName]!.suffix(3), [3, 64, 64])
            let values = processor.pixelValues(image)
            XCTAssertEqual(values.count, expected.count, valuesName)
            let maxError = zip(values, expected).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThanOrEqual(maxError, 1e-6, valuesName)
            XCTAssertEqual(values.map(\.bitPattern), expected.map(\.bitPattern), "\(valuesName): not bit-identical")
        }
    }

    func testPreprocessingGeometryAndParameters() {
        // 40x20 -> long side 64, short side int(20/40*64) = 32, pasted at y = 16 on a (127,127,127) canvas.
        let p = ImagePreprocessor(size: 64)
        let square = p.squareImage(RGBImage(width: 40, height: 20, fill: (255, 0, 0)))
        XCTAssertEqual([square.width, square.height], [64, 64])
        XCTAssertTrue(square[x: 0, y: 15] == (127, 127, 127))
        XCTAssertTrue(square[x: 0, y: 16] == (255, 0, 0))
        XCTAssertTrue(square[x: 63, y: 47] == (255, 0, 0))
        XCTAssertTrue(square[x: 63, y: 48] == (127, 127, 127))
        // Odd padding: the top/left gets the smaller half. 64x15 -> offset (64 - 15) / 2 = 24, rows 24...38.
        let thin = p.squareImage(RGBImage(width: 64, height: 15, fill: (0, 0, 0)))
        XCTAssertTrue(thin[x: 5, y: 23] == (127, 127, 127) && thin[x: 5, y: 24] == (0, 0, 0))
        XCTAssertTrue(thin[x: 5, y: 38] == (0, 0, 0) && thin[x: 5, y: 39] == (127, 127, 127))
        XCTAssertTrue(p.resizedSize(width: 1000, height: 10) == (64, 14))  // the minimum side
        XCTAssertTrue(ImagePreprocessor().resizedSize(width: 640, height: 427) == (384, 256))
        let values = p.pixelValues(RGBImage(width: 2, height: 2, fill: (255, 0, 127)))
        XCTAssertEqual(values.count, 3 * 64 * 64)
        XCTAssertEqual(values[0], 1)
        XCTAssertEqual(values[64 * 64], -1)
        XCTAssertEqual(values[2 * 64 * 64], 127 / 255 * 2 - 1, accuracy: 1e-6)
        // Other mean/std: the background follows int(mean * 255) and values (x/255 - mean) / std.
        let clip = ImagePreprocessor(size: 16, mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711])
        XCTAssertTrue(clip.background == (122, 116, 104))
        let v = clip.pixelValues(RGBImage(width: 8, height: 4, fill: (10, 20, 30)))
        // 8x4 -> 16x8 pasted at row 4: index 0 is padding, row 4 is the image.
        XCTAssertEqual(v[2 * 256 + 0], (Float(104.0 / 255.0) - 0.40821073) / 0.27577711)
        XCTAssertEqual(v[4 * 16], (Float(10.0 / 255.0) - 0.48145466) / 0.26862954)
        XCTAssertEqual(v[256 + 4 * 16], (Float(20.0 / 255.0) - 0.4578275) / 0.26130258)
    }

    func testInverseToImage() {
        // CHW planes [-2, 1], [0, 0.5], [-1, 0.999] -> HWC pixels (0, 127, 0), (255, 191, 254)
        let back = ImagePreprocessor.image(fromCHW: [-2, 1, 0, 0.5, -1, 0.999], width: 2, height: 1)
        XCTAssertEqual(back.pixels, [0, 127, 0, 255, 191, 254])
        XCTAssertEqual(ImagePreprocessor.image(fromCHW: [.nan, .infinity, -.infinity], width: 1, height: 1).pixels, [0, 255, 0])
        // Every byte survives normalise -> inverse (x / 255 * 2 - 1 -> (x + 1) / 2 * 255 may land just below, so
        // compare with truncation in mind: at most one less).
        let all = RGBImage(width: 256, height: 1, pixels: (0..<256).flatMap { [UInt8($0), UInt8(255 - $0), UInt8($0 / 2)] })
        let chw = ImagePreprocessor(size: 256).normalize(all)
        let round = ImagePreprocessor.image(fromCHW: chw, width: 256, height: 1)
        for (a, b) in zip(all.pixels, round.pixels) { XCTAssertTrue(a == b || a == b + 1, "\(a) -> \(b)") }
    }

    func testPasteClipsAndGridLaysOut() {
        var canvas = RGBImage(width: 4, height: 3, fill: (0, 0, 0))
        canvas.paste(RGBImage(width: 3, height: 3, fill: (9, 9, 9)), x: 2, y: -1)
        XCTAssertEqual(canvas.pixels.enumerated().filter { $0.element == 9 }.count, 2 * 2 * 3)
        XCTAssertTrue(canvas[x: 2, y: 0] == (9, 9, 9) && canvas[x: 3, y: 1] == (9, 9, 9) && canvas[x: 3, y: 2] == (0, 0, 0))
        let grid = RGBImage.grid([RGBImage(width: 2, height: 2, fill: (1, 1, 1)), RGBImage(width: 2, height: 2, fill: (2, 2, 2)),
                                  RGBImage(width: 2, height: 2, fill: (3, 3, 3))], columns: 2, gap: 1)
        XCTAssertEqual([grid.width, grid.height], [7, 7])
        XCTAssertTrue(grid[x: 0, y: 0] == (255, 255, 255) && grid[x: 1, y: 1] == (1, 1, 1) && grid[x: 4, y: 2] == (2, 2, 2))
        XCTAssertTrue(grid[x: 1, y: 4] == (3, 3, 3) && grid[x: 4, y: 4] == (255, 255, 255))
    }
}
