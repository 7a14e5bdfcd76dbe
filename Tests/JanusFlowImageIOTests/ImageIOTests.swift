import Foundation
import JanusFlowImageIO
import XCTest

let fixtureDir = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

/// Expected bytes come from Pillow 13 (Fixtures/make_fixtures.py); Pillow is the reference the official code uses.
final class ImageIOTests: XCTestCase {
    let index = try! JSONSerialization.jsonObject(with: Data(contentsOf: fixtureDir.appendingPathComponent("index.json"))) as! [String: Any]

    func bytes(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: fixtureDir.appendingPathComponent(name))) }

    func testDecodesLikePillowConvertRGB() throws {
        for c in index["decode"] as! [[String: Any]] {
            let name = c["file"] as! String
            let image = try RGBImage(contentsOf: fixtureDir.appendingPathComponent(name))
            XCTAssertEqual(image.width, c["width"] as? Int, name)
            XCTAssertEqual(image.height, c["height"] as? Int, name)
            XCTAssertEqual(image.pixels, try bytes(name + ".rgb"), name)
        }
    }

    func testBicubicResizeMatchesPillowExactly() throws {
        let src = index["resize_source"] as! [String: Any]
        let source = RGBImage(width: src["width"] as! Int, height: src["height"] as! Int, pixels: try bytes(src["file"] as! String))
        for c in index["resize"] as! [[String: Any]] {
            let (w, h) = (c["width"] as! Int, c["height"] as! Int)
            let out = PillowResize.resize(source, width: w, height: h)
            XCTAssertEqual(out.pixels, try bytes(c["file"] as! String), "\(w)x\(h)")
        }
    }

    func testPNGRoundTripOddSizes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("png-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        for (w, h) in [(1, 1), (7, 3), (33, 17)] {
            let pixels = (0..<(w * h * 3)).map { UInt8(($0 * 37 + w) % 256) }
            let image = RGBImage(width: w, height: h, pixels: pixels)
            let url = dir.appendingPathComponent("img_\(w)x\(h).png")
            try image.writePNG(to: url)
            XCTAssertEqual(try RGBImage(contentsOf: url), image)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["img_1x1.png", "img_33x17.png", "img_7x3.png"])
    }

    func testBadFilesGiveClearErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = dir.appendingPathComponent("missing.png")
        XCTAssertThrowsError(try RGBImage(contentsOf: missing)) { XCTAssertEqual("\($0)", "\(missing.path): file not found or not readable") }
        let text = dir.appendingPathComponent("notes.png")
        try "hello, not an image".write(to: text, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RGBImage(contentsOf: text)) { XCTAssertEqual("\($0)", "\(text.path): not a PNG or JPEG file (unrecognised signature)") }
        let gif = dir.appendingPathComponent("anim.gif")
        try Data("GIF89a\u{1}\u{0}".utf8).write(to: gif)
        XCTAssertThrowsError(try RGBImage(contentsOf: gif)) { XCTAssertEqual("\($0)", "\(gif.path): not a PNG or JPEG file (GIF)") }
        let empty = dir.appendingPathComponent("empty.jpg")
        try Data().write(to: empty)
        XCTAssertThrowsError(try RGBImage(contentsOf: empty)) { XCTAssertEqual("\($0)", "\(empty.path): empty file") }
        let good = try bytes("rgb.png")
        let truncated = dir.appendingPathComponent("truncated.png")
        try Data(good.prefix(good.count - 30)).write(to: truncated)
        XCTAssertThrowsError(try RGBImage(contentsOf: truncated)) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(truncated.path): "), "\(error)")
        }
        let jpeg = try bytes("photo.jpg")
        let badJPEG = dir.appendingPathComponent("bad.jpg")
        try Data(jpeg.prefix(40)).write(to: badJPEG)
        XCTAssertThrowsError(try RGBImage(contentsOf: badJPEG)) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(badJPEG.path): "), "\(error)")
        }
    }

    func testPreprocessingGeometryAndInverse() {
        // 40x20 -> long side 64, short side int(20/40*64) = 32, pasted at y = 16 on a (127,127,127) canvas.
        let p = ImagePreprocessor(size: 64)
        let square = p.squareImage(RGBImage(width: 40, height: 20, fill: (255, 0, 0)))
        XCTAssertEqual([square.width, square.height], [64, 64])
        XCTAssertTrue(square[x: 0, y: 15] == (127, 127, 127))
        XCTAssertTrue(square[x: 0, y: 16] == (255, 0, 0))
        XCTAssertTrue(square[x: 63, y: 47] == (255, 0, 0))
        XCTAssertTrue(square[x: 63, y: 48] == (127, 127, 127))
        let values = p.pixelValues(RGBImage(width: 2, height: 2, fill: (255, 0, 127)))
        XCTAssertEqual(values[0], 1)
        XCTAssertEqual(values[64 * 64], -1)
        XCTAssertEqual(values[2 * 64 * 64], 127 / 255 * 2 - 1, accuracy: 1e-6)
        let back = ImagePreprocessor.image(fromCHW: [-2, 1, 0, 0.5, -1, 0.999], width: 2, height: 1)
        // CHW channel planes [-2, 1], [0, 0.5], [-1, 0.999] -> HWC pixels (0, 127, 0), (255, 191, 254)
        XCTAssertEqual(back.pixels, [0, 127, 0, 255, 191, 254])
    }
}
