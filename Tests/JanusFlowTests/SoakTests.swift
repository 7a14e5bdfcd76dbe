import Foundation
import XCTest

/// A short `scripts/soak` against `janusflow serve` on the tiny model: mixed valid, hung-up, slow, oversized and
/// malformed requests from 4x more clients than may queue; every reply must be the result or its documented error.
final class SoakTests: XCTestCase {
    func testTheServerUnderMixedHostileLoad() throws {
        guard FileManager.default.fileExists(atPath: cliBinary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let (status, printed) = try runProgram(URL(fileURLWithPath: "/usr/bin/env"), [
            "python3", root.appendingPathComponent("scripts/soak").path, "--cli", cliBinary.path,
            "--model", tinyFixture.appendingPathComponent("model").path, "--vae", tinyFixture.appendingPathComponent("vae").path,
            "--seconds", "10", "--max-queued", "2"])
        print(printed)
        XCTAssertEqual(status, 0, printed)
        XCTAssertTrue(printed.contains("wrong or failed 0; server alive True, /health 200"), printed)
        // Every kind of client was exercised.
        for scenario in ["understand", "generate", "chat completions", "stream, hang up", "slow body", "oversized body", "malformed JSON"] {
            XCTAssertTrue(printed.contains("\n\(scenario) "), "no \(scenario) request in:\n\(printed)")
        }
    }
}
