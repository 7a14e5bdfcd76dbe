import Foundation
import JanusFlowTraining
import XCTest

final class ManifestTests: XCTestCase {
    func testBadRecordsAreCountedAndSkipped() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("manifest-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("images"), withIntermediateDirectories: true)
        try Data([1]).write(to: dir.appendingPathComponent("images/a.png"))
        let lines = [
            #"{"image": "images/a.png", "caption": "a photo of a red circle"}"#,
            #"{"image": "images/missing.png", "caption": "a blue square"}"#,
            #"{"image": "images/a.png", "caption": "   "}"#,
            #"{"image": "images/a.png"}"#,
            #"not json at all"#,
            "",
            #"{"caption": "no image"}"#,
        ]
        let url = dir.appendingPathComponent("gen.jsonl")
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        let (records, report) = try Manifest.read(url, kind: .generation)
        XCTAssertEqual(records, [.generation(image: dir.appendingPathComponent("images/a.png"), caption: "a photo of a red circle")])
        XCTAssertEqual(report.lines, 6)
        XCTAssertEqual(report.used, 1)
        XCTAssertEqual(report.skipped, ["missing image": 1, "empty caption": 1, "missing field 'caption'": 1, "invalid JSON": 1, "missing field 'image'": 1])
        XCTAssertTrue(report.description.contains("line 2: missing image (images/missing.png)"), report.description)

        let und = dir.appendingPathComponent("und.jsonl")
        try [#"{"image": "images/a.png", "conversation": [{"role": "User", "content": "<image_placeholder>\nwhat?"}, {"role": "Assistant", "content": "red"}]}"#,
             #"{"image": "images/a.png", "conversation": [{"role": "User", "content": "what?"}, {"role": "Assistant", "content": "red"}]}"#,
             #"{"image": "images/a.png", "conversation": [{"role": "User", "content": "<image_placeholder>"}]}"#,
             #"{"image": "images/a.png", "conversation": [{"role": "Assistant", "content": "<image_placeholder>"}, {"role": "User", "content": "red"}]}"#]
            .joined(separator: "\n").write(to: und, atomically: true, encoding: .utf8)
        let (u, ur) = try Manifest.read(und, kind: .understanding)
        XCTAssertEqual(u.count, 1)
        XCTAssertEqual(ur.skippedCount, 3)
        XCTAssertEqual(ur.skipped["conversation must alternate User/Assistant turns with role and content"], 2)

        XCTAssertThrowsError(try Manifest.read(dir.appendingPathComponent("nope.jsonl"), kind: .text)) {
            XCTAssertEqual("\($0)", "\(dir.path)/nope.jsonl: manifest not found or not readable")
        }
    }
}
