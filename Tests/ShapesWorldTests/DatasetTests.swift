import Foundation
import ShapesWorld
import XCTest

final class DatasetTests: XCTestCase {
    let counts = DatasetCounts(understandingImages: 30, questionsPerImage: 3, generationImages: 24, textLines: 50,
                               evalPromptsPerCategory: 5, evalUnderstandingImages: 10)

    /// A stand-in for the PNG codec: a binary PPM.
    static func writePPM(_ image: ShapeImage, _ url: URL) throws {
        try (Data("P6\n\(image.width) \(image.height)\n255\n".utf8) + Data(image.pixels)).write(to: url)
    }

    static func readPPM(_ url: URL) throws -> ShapeImage {
        let data = try Data(contentsOf: url)
        let header = "P6\n32 32\n255\n"
        XCTAssertEqual(String(decoding: data.prefix(header.utf8.count), as: UTF8.self), header)
        return ShapeImage(width: 32, height: 32, pixels: Array(data.dropFirst(header.utf8.count)))
    }

    func write(seed: UInt64) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("shapesworld-\(UUID().uuidString)")
        try ShapesWorld.writeDataset(to: dir, seed: seed, counts: counts, writePNG: Self.writePPM)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    /// Relative path -> contents of every file under `dir`.
    func contents(_ dir: URL) throws -> [String: Data] {
        var out: [String: Data] = [:]
        let root = dir.resolvingSymlinksInPath().path
        for case let url as URL in FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.isRegularFileKey])! {
            guard try url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile == true else { continue }
            out[String(url.resolvingSymlinksInPath().path.dropFirst(root.count + 1))] = try Data(contentsOf: url)
        }
        return out
    }

    func lines(_ url: URL) throws -> [[String: Any]] {
        try String(decoding: Data(contentsOf: url), as: UTF8.self).split(separator: "\n").map {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    func testSameSeedWritesIdenticalBytesAndOtherSeedsDiffer() throws {
        let a = try contents(write(seed: 42)), b = try contents(write(seed: 42)), c = try contents(write(seed: 43))
        XCTAssertEqual(Set(a.keys), Set(b.keys))
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.count, 30 + 24 + 10 + 6)
        for name in ["understanding.jsonl", "generation.jsonl", "text.jsonl", "eval/evaluation_metadata.jsonl", "eval/understanding.jsonl", "images/000000.png"] {
            XCTAssertNotEqual(a[name], c[name], name)
        }
        XCTAssertEqual(a["vocabulary.txt"], c["vocabulary.txt"])
        // Each part has its own stream: more text lines change nothing else.
        var more = counts
        more.textLines = 80
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("shapesworld-\(UUID().uuidString)")
        try ShapesWorld.writeDataset(to: dir, seed: 42, counts: more, writePNG: Self.writePPM)
        defer { try? FileManager.default.removeItem(at: dir) }
        let d = try contents(dir)
        XCTAssertEqual(d["generation.jsonl"], a["generation.jsonl"])
        XCTAssertEqual(d["eval/understanding.jsonl"], a["eval/understanding.jsonl"])
        XCTAssertNotEqual(d["text.jsonl"], a["text.jsonl"])
    }

    func testManifestsHaveTheTrainingFormatsAndMatchTheirImages() throws {
        let dir = try write(seed: 7)
        let detector = Detector()

        let understanding = try lines(dir.appendingPathComponent("understanding.jsonl"))
        XCTAssertEqual(understanding.count, 30 * 3)
        for line in understanding {
            XCTAssertEqual(Set(line.keys), ["image", "conversation"])
            let turns = try XCTUnwrap(line["conversation"] as? [[String: String]])
            XCTAssertEqual(turns.map { $0["role"] }, ["User", "Assistant"])
            XCTAssertTrue(turns[0]["content"]!.hasPrefix("<image_placeholder>\n"))
            XCTAssertFalse(turns[1]["content"]!.isEmpty)
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent(line["image"] as! String).path))
        }
        XCTAssertEqual(understanding.first?["image"] as? String, "images/000000.png")
        let raw = String(decoding: try Data(contentsOf: dir.appendingPathComponent("understanding.jsonl")), as: UTF8.self)
        XCTAssertTrue(raw.hasPrefix(#"{"image": "images/000000.png", "conversation": [{"role": "User", "content": "<image_placeholder>\n"#), raw)

        // Generation: captions describe their images (the detector finds what the caption names).
        let generation = try lines(dir.appendingPathComponent("generation.jsonl"))
        XCTAssertEqual(generation.count, 24)
        for (j, line) in generation.enumerated() {
            XCTAssertEqual(Set(line.keys), ["image", "caption"])
            XCTAssertEqual(line["image"] as? String, String(format: "images/%06d.png", 30 + j))
            let caption = try XCTUnwrap(line["caption"] as? String)
            let found = detector.detect(try Self.readPPM(dir.appendingPathComponent(line["image"] as! String)))
            for o in found { XCTAssertTrue(caption.contains("\(o.color.rawValue) \(o.kind.rawValue)"), "\(caption) \(o)") }
            XCTAssertFalse(found.isEmpty)
        }

        let text = try lines(dir.appendingPathComponent("text.jsonl"))
        XCTAssertEqual(text.count, 50)
        XCTAssertTrue(text.allSatisfy { Set($0.keys) == ["text"] && !($0["text"] as! String).isEmpty })
        let vocabulary = String(decoding: try Data(contentsOf: dir.appendingPathComponent("vocabulary.txt")), as: UTF8.self)
        XCTAssertEqual(vocabulary, ShapesWorld.vocabulary().joined(separator: "\n") + "\n")

        // Held-out GenEval prompts: GenEval metadata lines.
        let metadata = String(decoding: try Data(contentsOf: dir.appendingPathComponent("eval/evaluation_metadata.jsonl")), as: UTF8.self)
            .split(separator: "\n").map(String.init)
        XCTAssertEqual(metadata.count, 30)
        let parsed = try metadata.map { try Requirements.parseMetadataLine($0) }
        XCTAssertEqual(parsed.map(\.requirements.category), GenEvalCategory.allCases.flatMap { Array(repeating: $0, count: 5) })
        XCTAssertTrue(metadata[0].hasPrefix(#"{"tag": "single_object", "include": [{"class": "#), metadata[0])

        // Held-out understanding: every type on every image, POPE balanced in each setting.
        let evalQuestions = try lines(dir.appendingPathComponent("eval/understanding.jsonl"))
        var byType: [String: Int] = [:], popeYes: [String: Int] = [:], popeAll: [String: Int] = [:]
        for line in evalQuestions {
            let type = try XCTUnwrap(line["type"] as? String)
            byType[type, default: 0] += 1
            XCTAssertNotNil(line["question"] as? String)
            XCTAssertNotNil(line["answer"] as? String)
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("eval").appendingPathComponent(line["image"] as! String).path))
            if type == "pope" {
                let setting = try XCTUnwrap(line["setting"] as? String)
                popeAll[setting, default: 0] += 1
                if line["answer"] as? String == "yes" { popeYes[setting, default: 0] += 1 }
            } else {
                XCTAssertNil(line["setting"])
            }
        }
        for type in ["shape", "color", "count", "position", "describe"] { XCTAssertEqual(byType[type], 10, type) }
        XCTAssertEqual(Set(popeAll.keys), ["random", "popular", "adversarial"])
        for (setting, n) in popeAll { XCTAssertEqual(popeYes[setting]! * 2, n, setting) }
    }
}
