import Foundation
import PyTorchRandom
import XCTest

/// Reference draws recorded from torch 2.15 (Fixtures/torch_randn.json). bfloat16 draws (what the demo uses) must
/// be identical; float32 within 1e-6, since PyTorch's vectorised Box-Muller uses its own log/cos (a few ulp apart).
final class TorchGeneratorTests: XCTestCase {
    func testMT19937KnownAnswer() {
        var mt = MT19937(seed: 5489)
        XCTAssertEqual(mt.next(), 3_499_211_612)
        var seeded = MT19937(seed: 0)
        XCTAssertEqual(seeded.next(), 2_357_136_044)  // std::mt19937(0)'s first output
    }

    func testDrawsMatchTorch() throws {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("torch_randn.json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let cases = json["cases"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 6)
        for c in cases {
            let seed = UInt64(c["seed"] as! Int)
            let shape = c["shape"] as! [Int]
            let count = shape.reduce(1, *)
            var g = TorchGenerator(seed: seed)
            let bfloat = (c["dtype"] as! String) == "bfloat16"
            let values = bfloat ? g.randnBFloat16(count: count) : g.randn(count: count)
            let label = "seed \(seed) shape \(shape) \(c["dtype"]!)"
            let first = (c["first"] as! [Double]).map(Float.init)
            for (i, v) in first.enumerated() { XCTAssertEqual(values[i], v, accuracy: bfloat ? 0 : 1e-6, "\(label) first[\(i)]") }
            for (k, v) in c["at"] as? [String: Double] ?? [:] {
                XCTAssertEqual(values[Int(k)!], Float(v), accuracy: bfloat ? 0 : 1e-6, "\(label) at \(k)")
            }
            let sum = values.reduce(0.0) { $0 + Double($1) }
            let sumsq = values.reduce(0.0) { $0 + Double($1) * Double($1) }
            XCTAssertEqual(sum, c["sum"] as! Double, accuracy: 1e-3 * max(1, Double(count).squareRoot()), "\(label) sum")
            if let expected = c["sumsq"] as? Double { XCTAssertEqual(sumsq, expected, accuracy: 1e-4 * Double(count), "\(label) sumsq") }
        }
    }

    func testSuccessiveSmallDrawsContinueTheStream() {
        // Two draws of 2 from one generator equal one draw of 4 (the cached Box-Muller value carries over).
        var a = TorchGenerator(seed: 0), b = TorchGenerator(seed: 0)
        XCTAssertEqual(a.randn(count: 2) + a.randn(count: 2), b.randn(count: 4))
    }
}
